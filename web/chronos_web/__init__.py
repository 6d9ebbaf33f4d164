"""The Chronos dashboard: static browser files served by the kernel at /ui/."""
