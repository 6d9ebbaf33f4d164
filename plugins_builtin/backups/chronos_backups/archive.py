"""The archive format: a tar file (optionally encrypted) whose first member is manifest.json.

Members::

    manifest.json             format and versions, revisions, row counts, sha256 of every other member
    database/chronos.db       SQLite: a consistent snapshot (online backup API; the WAL is folded in)
    database/chronos.pgdump   PostgreSQL: pg_dump in custom format
    config/effective.json     the effective configuration, every secret redacted
    assets/...                template assets

Encrypted archives (``.tar.enc``) wrap the same tar stream in AES-256-GCM chunks
(the ``cryptography`` package) under a key derived with scrypt from the
passphrase: a header, then chunks of at most 1 MiB, each sealed with its index
and a last-chunk flag, so reordering, truncation and a wrong passphrase are all
detected.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import re
import secrets
import struct
import tarfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

FORMAT = "chronos-backup"
FORMAT_VERSION = 1
PRODUCT = "chronos-engine"
MANIFEST = "manifest.json"
SQLITE_MEMBER = "database/chronos.db"
PG_MEMBER = "database/chronos.pgdump"
CONFIG_MEMBER = "config/effective.json"
SUFFIXES = (".tar.enc", ".tar")
#: An archive's id is its file name without the suffix.
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
MEMBER_RE = re.compile(r"^(manifest\.json|database/chronos\.(db|pgdump)|config/effective\.json|assets/[^\x00]+)$")

MAGIC = b"CHRONOSBK-ENC\x00\x01"
CHUNK = 1 << 20
SCRYPT_N_LOG2, SCRYPT_R, SCRYPT_P = 15, 8, 1


class ArchiveError(Exception):
    """The archive cannot be used; the message says why, for a person."""


# -- encryption ---------------------------------------------------------------------------------------


def _derive(passphrase: str, salt: bytes, n_log2: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=1 << n_log2, r=r, p=p).derive(passphrase.encode("utf-8"))


class EncryptingWriter(io.RawIOBase):
    """Writes AES-GCM chunks of what it is given to ``out``; ``close()`` seals the last chunk."""

    def __init__(self, out: IO[bytes], passphrase: str) -> None:
        super().__init__()
        salt, self._prefix = os.urandom(16), os.urandom(8)
        self._header = MAGIC + bytes([SCRYPT_N_LOG2, SCRYPT_R, SCRYPT_P]) + salt + self._prefix
        self._aead = AESGCM(_derive(passphrase, salt, SCRYPT_N_LOG2, SCRYPT_R, SCRYPT_P))
        self._out = out
        self._buf = bytearray()
        self._index = 0
        self._written = 0
        out.write(self._header)

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        """Plaintext bytes written so far (tarfile asks where it is)."""
        return self._written

    def write(self, data: Any) -> int:
        self._written += len(data)
        self._buf += data
        while len(self._buf) > CHUNK:
            self._seal(bytes(self._buf[:CHUNK]), last=False)
            del self._buf[:CHUNK]
        return len(data)

    def _seal(self, plain: bytes, *, last: bool) -> None:
        nonce = self._prefix + struct.pack(">I", self._index)
        sealed = self._aead.encrypt(nonce, plain, self._header + struct.pack(">I?", self._index, last))
        self._out.write(struct.pack(">I", len(sealed)) + sealed)
        self._index += 1

    def close(self) -> None:
        if not self.closed:
            self._seal(bytes(self._buf), last=True)
            self._buf.clear()
        super().close()


class DecryptingReader(io.RawIOBase):
    """Reads the plaintext of an encrypted archive; raises :class:`ArchiveError` on any tampering."""

    def __init__(self, src: IO[bytes], passphrase: str | None) -> None:
        super().__init__()
        header = src.read(len(MAGIC) + 3 + 16 + 8)
        if len(header) < len(MAGIC) + 27 or not header.startswith(MAGIC):
            raise ArchiveError("not an encrypted Chronos archive (bad header)")
        if not passphrase:
            raise ArchiveError("the archive is encrypted: set CHRONOS__BACKUPS__PASSPHRASE to its passphrase")
        n_log2, r, p = header[len(MAGIC) : len(MAGIC) + 3]
        if not (10 <= n_log2 <= 22 and 1 <= r <= 32 and 1 <= p <= 16):
            raise ArchiveError("not an encrypted Chronos archive (unsupported key parameters)")
        salt = header[len(MAGIC) + 3 : len(MAGIC) + 19]
        self._prefix = header[len(MAGIC) + 19 :]
        self._header = header
        self._aead = AESGCM(_derive(passphrase, salt, n_log2, r, p))
        self._src = src
        self._index = 0
        self._buf = b""
        self._done = False

    def readable(self) -> bool:
        return True

    def _next(self) -> None:
        head = self._src.read(4)
        if len(head) < 4:
            raise ArchiveError("the archive is truncated (its last encrypted chunk is missing)")
        (size,) = struct.unpack(">I", head)
        if size > CHUNK + 16:
            raise ArchiveError("the archive is damaged (an encrypted chunk is too large)")
        sealed = self._src.read(size)
        if len(sealed) < size:
            raise ArchiveError("the archive is truncated (an encrypted chunk is cut short)")
        nonce = self._prefix + struct.pack(">I", self._index)
        for last in (False, True):
            try:
                plain = self._aead.decrypt(nonce, sealed, self._header + struct.pack(">I?", self._index, last))
            except InvalidTag:
                continue
            break
        else:
            if self._index == 0:
                raise ArchiveError("wrong passphrase, or the archive is damaged")
            raise ArchiveError(f"the archive is damaged (encrypted chunk {self._index} fails its check)")
        self._index += 1
        self._buf += plain
        if last:
            if self._src.read(1):
                raise ArchiveError("the archive is damaged (data after its last chunk)")
            self._done = True

    def readinto(self, b: Any) -> int:
        while not self._buf and not self._done:
            self._next()
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


# -- reading ------------------------------------------------------------------------------------------


def is_encrypted(path: Path) -> bool:
    return path.name.endswith(".tar.enc")


def archive_id(path: Path) -> str | None:
    """The id of an archive file, or None when the name is not one of an archive."""
    for suffix in SUFFIXES:
        if path.name.endswith(suffix):
            stem = path.name[: -len(suffix)]
            return stem if ID_RE.match(stem) else None
    return None


def check_member_name(name: str) -> None:
    """Refuse names that could write outside the extraction directory, or that the format does not know."""
    pure = PurePosixPath(name)
    if name.startswith(("/", "\\")) or pure.is_absolute() or re.match(r"^[A-Za-z]:", name):
        raise ArchiveError(f"the archive holds a member with an absolute path: {name!r}")
    if any(part in ("..", "") for part in name.split("/")) or "\\" in name:
        raise ArchiveError(f"the archive holds a member whose path leaves the archive: {name!r}")
    if not MEMBER_RE.match(name):
        raise ArchiveError(f"the archive holds an unexpected member: {name!r}")


@dataclass
class Member:
    name: str
    size: int
    sha256: str


def check_manifest(manifest: Any) -> dict[str, Any]:
    """The manifest, when this code can restore an archive that carries it."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArchiveError("not a Chronos backup (its manifest is not one)")
    if manifest.get("product") != PRODUCT:
        raise ArchiveError(f"this archive is a backup of another product ({str(manifest.get('product'))[:80]!r})")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise ArchiveError("the manifest has no valid format_version")
    if version > FORMAT_VERSION:
        raise ArchiveError(
            f"the archive was written in backup format {version}, newer than this installation reads"
            f" ({FORMAT_VERSION}): upgrade Chronos to restore it"
        )
    members = manifest.get("members")
    if not isinstance(members, dict) or not all(
        isinstance(v, dict) and isinstance(v.get("sha256"), str) and isinstance(v.get("size"), int)
        for v in members.values()
    ):
        raise ArchiveError("the manifest lists no valid members")
    for name in members:
        check_member_name(name)
    if manifest.get("backend") not in ("sqlite", "postgresql"):
        raise ArchiveError("the manifest names no known database backend")
    if manifest.get("database_member") not in members:
        raise ArchiveError("the manifest names no database member")
    return manifest


class ArchiveReader:
    """Streams an archive once: the manifest first, then each member checked against it."""

    def __init__(self, path: Path, passphrase: str | None) -> None:
        self.path = path
        self._file = open(path, "rb")  # noqa: SIM115 - closed by close()
        try:
            stream: IO[bytes] = self._file
            if is_encrypted(path):
                stream = io.BufferedReader(DecryptingReader(self._file, passphrase), CHUNK)
            self._tar = tarfile.open(fileobj=stream, mode="r|")  # noqa: SIM115 - closed with the file
            self.manifest = self._read_manifest()
        except BaseException:
            self._file.close()
            raise

    def __enter__(self) -> ArchiveReader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    def _read_manifest(self) -> dict[str, Any]:
        try:
            first = self._tar.next()
        except (tarfile.TarError, EOFError) as exc:
            raise ArchiveError(f"not a readable archive ({exc})") from None
        if first is None or first.name != MANIFEST or not first.isfile():
            raise ArchiveError("not a Chronos backup (manifest.json is not its first member)")
        if first.size > 16 * 1024 * 1024:
            raise ArchiveError("the manifest is too large")
        data = self._extract(first).read()
        try:
            manifest = json.loads(data)
        except ValueError:
            raise ArchiveError("the manifest is not valid JSON") from None
        return check_manifest(manifest)

    def _extract(self, info: tarfile.TarInfo) -> IO[bytes]:
        f = self._tar.extractfile(info)
        if f is None:
            raise ArchiveError(f"member {info.name!r} is not a regular file")
        return f

    def members(self, into: Path | None = None, wanted: tuple[str, ...] = ()) -> Iterator[tuple[Member, Path | None]]:
        """Every member after the manifest, hashed; the ``wanted`` ones are written below ``into``.

        Raises :class:`ArchiveError` on a member the manifest does not list, a hash or size that
        differs, a missing member or a truncated archive.
        """
        expected = dict(self.manifest["members"])
        seen: set[str] = set()
        while True:
            try:
                info = self._tar.next()
            except ArchiveError:
                raise
            except (tarfile.TarError, EOFError, OSError) as exc:
                raise ArchiveError(f"the archive is truncated or damaged ({exc})") from None
            if info is None:
                break
            check_member_name(info.name)
            if not info.isfile():
                raise ArchiveError(f"member {info.name!r} is not a regular file")
            if info.name not in expected or info.name in seen:
                raise ArchiveError(f"member {info.name!r} is not listed in the manifest")
            seen.add(info.name)
            target = None
            if into is not None and info.name in wanted:
                target = into / PurePosixPath(info.name).name
            digest, size = hashlib.sha256(), 0
            src = self._extract(info)
            out = open(target, "wb") if target is not None else None  # noqa: SIM115
            try:
                while True:
                    try:
                        block = src.read(CHUNK)
                    except ArchiveError:
                        raise
                    except (tarfile.TarError, EOFError, OSError) as exc:
                        raise ArchiveError(f"the archive is truncated or damaged ({exc})") from None
                    if not block:
                        break
                    digest.update(block)
                    size += len(block)
                    if out is not None:
                        out.write(block)
            finally:
                if out is not None:
                    out.close()
            want = expected[info.name]
            if size != want["size"]:
                raise ArchiveError(f"member {info.name!r} is truncated ({size} of {want['size']} bytes)")
            if digest.hexdigest() != want["sha256"]:
                raise ArchiveError(f"member {info.name!r} does not match its sha256 in the manifest")
            yield Member(info.name, size, want["sha256"]), target
        missing = sorted(set(expected) - seen - {MANIFEST})
        if missing:
            raise ArchiveError(f"the archive is truncated: member(s) {', '.join(missing)} missing")


def read_manifest(path: Path, passphrase: str | None) -> dict[str, Any]:
    with ArchiveReader(path, passphrase) as reader:
        return reader.manifest


# -- writing ------------------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def write_archive(
    out_path: Path,
    manifest: dict[str, Any],
    files: dict[str, Path],
    blobs: dict[str, bytes],
    passphrase: str | None,
    progress: Any = None,
) -> None:
    """Write the manifest, then ``blobs`` and ``files`` (member name -> content), to ``out_path``;
    fsync it. ``progress(n)`` is called with the bytes of each block written.

    A file whose ``sha256`` in ``manifest["members"]`` is None is hashed while it is copied: the
    manifest goes out with a unique placeholder of the same length, overwritten in place once the
    file is written (one pass over a large snapshot instead of two). Encrypted archives cannot be
    patched in place, so their files are hashed first."""
    members = manifest["members"]
    pending = {name: secrets.token_hex(32) for name in files if members[name]["sha256"] is None}
    if passphrase is not None:
        for name in pending:
            members[name]["sha256"] = sha256_file(files[name])
        pending = {}
    for name, token in pending.items():
        members[name]["sha256"] = token
    digests: dict[str, str] = {}
    with open(out_path, "w+b") as raw:
        sink: Any = raw
        enc = None
        if passphrase is not None:
            sink = enc = EncryptingWriter(raw, passphrase)
        # Not the stream mode ("w|"): its buffer re-slices every block written, quadratic in the chunk size.
        with tarfile.open(fileobj=sink, mode="w", format=tarfile.PAX_FORMAT) as tar:
            tar.copybufsize = CHUNK
            body = json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8")
            _add_bytes(tar, MANIFEST, body)
            for name, data in blobs.items():
                _add_bytes(tar, name, data)
            for name, path in files.items():
                info = tarfile.TarInfo(name)
                info.size = path.stat().st_size
                info.mtime = int(path.stat().st_mtime)
                info.mode = 0o600
                if enc is None:
                    digests[name] = _add_file_in_kernel(tar, raw, info, path, progress)
                    continue
                with open(path, "rb") as f:
                    reader = _Counting(f, progress)
                    tar.addfile(info, reader)
                digests[name] = reader.digest.hexdigest()
        if enc is not None:
            enc.close()
        if pending:
            raw.flush()
            raw.seek(0)
            head = raw.read(len(body) + 64 * 1024)
            for name, token in pending.items():
                at = head.find(token.encode())
                if at < 0 or head.count(token.encode()) != 1:
                    raise ArchiveError("internal error: the manifest placeholder was not found")
                raw.seek(at)
                raw.write(digests[name].encode())
                members[name]["sha256"] = digests[name]
        raw.flush()
        os.fsync(raw.fileno())


FALLOC_FL_INSERT_RANGE = 0x20


def _insert_range(fd: int, length: int) -> bool:
    """Shift the file's content ``length`` bytes up from offset 0 without copying it (Linux
    ``fallocate(FALLOC_FL_INSERT_RANGE)``: ext4, XFS); False where the filesystem cannot."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fallocate = libc.fallocate
    except (OSError, AttributeError):
        return False
    fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    return bool(fallocate(fd, FALLOC_FL_INSERT_RANGE, 0, length) == 0)


def _padded(n: int) -> int:
    return n + (-n % tarfile.BLOCKSIZE)


def _header(name: str, size: int, mtime: int = 0) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, mtime, 0o600
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def archive_in_place(
    snapshot: Path, member: str, manifest: dict[str, Any], blobs: dict[str, bytes], files: dict[str, Path]
) -> bool:
    """Turn the snapshot file itself into the archive: room for the manifest, ``blobs`` and the
    member's header is inserted before its first byte (no copy of the data), ``files`` and the end
    of the archive are appended. Every sha256 in ``manifest["members"]`` must be known. Returns
    False, leaving the file as it was, where the filesystem cannot insert."""
    size = snapshot.stat().st_size
    block = max(tarfile.BLOCKSIZE, os.statvfs(snapshot.parent).f_frsize or 4096)
    if size == 0 or block % tarfile.BLOCKSIZE:
        return False
    body = json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8")
    rest = b"".join(_header(name, len(data)) + data + tarfile.NUL * (-len(data) % 512) for name, data in blobs.items())
    rest += _header(member, size, int(snapshot.stat().st_mtime))
    # Spaces after the JSON (still the same document) fill the front up to a whole filesystem block.
    used = len(_header(MANIFEST, _padded(len(body)))) + _padded(len(body)) + len(rest)
    body_len = _padded(len(body)) + (-used % block)
    front = _header(MANIFEST, body_len) + body + b" " * (body_len - len(body)) + rest
    if len(front) % block:
        return False
    with open(snapshot, "r+b") as f:
        if not _insert_range(f.fileno(), len(front)):
            return False
        f.seek(0)
        f.write(front)
        f.seek(0, os.SEEK_END)
        f.write(tarfile.NUL * (-size % tarfile.BLOCKSIZE))
        for name, path in files.items():
            f.write(_header(name, path.stat().st_size, int(path.stat().st_mtime)))
            with open(path, "rb") as src:
                while chunk := src.read(CHUNK):
                    f.write(chunk)
            f.write(tarfile.NUL * (-path.stat().st_size % tarfile.BLOCKSIZE))
        end = f.tell() + 2 * tarfile.BLOCKSIZE
        f.write(tarfile.NUL * (2 * tarfile.BLOCKSIZE + (-end % tarfile.RECORDSIZE)))
        f.flush()
        os.fsync(f.fileno())
    return True


def _add_file_in_kernel(tar: tarfile.TarFile, raw: IO[bytes], info: tarfile.TarInfo, path: Path, progress: Any) -> str:
    """Append a file member with ``copy_file_range`` (the kernel copies; no pass through Python)
    while another thread hashes the same file from the page cache; returns its sha256."""
    with ThreadPoolExecutor(1) as pool:
        digest = pool.submit(sha256_file, path)
        header = info.tobuf(tar.format, tar.encoding, tar.errors)
        raw.write(header)
        raw.flush()
        left = info.size
        in_kernel = True
        with open(path, "rb") as src:
            while left > 0:
                if in_kernel:
                    try:
                        n = os.copy_file_range(src.fileno(), raw.fileno(), min(left, 64 << 20))
                    except OSError as exc:
                        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                            raise
                        in_kernel = False  # another filesystem: copy through Python
                        continue
                else:
                    block = memoryview(src.read(min(left, CHUNK)))
                    n = len(block)
                    while block:
                        block = block[os.write(raw.fileno(), block) :]
                if n == 0:
                    raise ArchiveError(f"{path} shrank while it was archived")
                left -= n
                if progress is not None:
                    progress(n)
        raw.seek(0, os.SEEK_END)  # the buffered file's idea of its position, after the kernel wrote
        padding = -info.size % tarfile.BLOCKSIZE
        raw.write(tarfile.NUL * padding)
        tar.offset += len(header) + info.size + padding
        tar.members.append(info)
        return digest.result()


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o600
    tar.addfile(info, io.BytesIO(data))


class _Counting:
    """A file read once by tarfile: hashed and reported on the way."""

    def __init__(self, f: IO[bytes], progress: Any) -> None:
        self._f, self._progress = f, progress
        self.digest = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        if data:
            self.digest.update(data)
            if self._progress is not None:
                self._progress(len(data))
        return data
