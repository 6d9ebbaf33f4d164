"""Kernel contracts: the interfaces plugins cooperate through.

Plugins never import each other. When one needs another's capability, the
interface lives here, one plugin provides it (``register_services``) and the
others look it up with ``ctx.service(Interface)``. Everything here is
re-exported from :mod:`chronos.plugin`.
"""
