"""`stargan-rt pull`: download (or copy) a catalogue model's official files, check them, unpack
archives safely and import them into a named bundle in the model home.

Layout inside the model home while a pull runs:
  .downloads/NAME/FILE.part  downloaded bytes; kept after a network failure so that the next pull
                             resumes with an HTTP Range request; removed once the bundle exists
  .NAME.pull-PID/            unpacked files and the bundle being imported; always removed
  .NAME.lock                 held (flock) while a pull of NAME runs; removed at the end
  NAME/                      the finished bundle, moved into place in one rename

The import itself is stargan_rt.importer.import_checkpoint, the same code as `stargan-rt import`.
"""
from __future__ import annotations

import datetime as _dt
import errno
import hashlib
import http.client
import os
import shutil
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable

from stargan_rt import __version__
from stargan_rt.catalogue import Entry, FileSpec, load_catalogue, model_home
from stargan_rt.errors import UserError

CHUNK = 1 << 16
MAX_MEMBER_BYTES = 4 << 30      # one unpacked archive member (official checkpoints: < 1 GB)
MAX_ARCHIVE_BYTES = 8 << 30     # all unpacked members together
MAX_DOWNLOAD_BYTES = 4 << 30    # one download whose size the catalogue does not record
ZIP_MAGIC = b"PK\x03\x04"
BACKOFF_SECONDS = 1.0           # the first retry's wait; doubled for each further retry


class NetworkError(UserError):
    """A failure worth retrying (connection dropped, time-out, server error): exit status 1."""

    exit_code = 1


class PayloadError(UserError):
    """What arrived is not the expected file (HTML page, wrong size, wrong hash, wrong type)."""


@dataclass
class PullOptions:
    source: str | None = None        # --from: a folder or a mirror base URL
    sha256: dict[str, str] = field(default_factory=dict)  # file name -> expected hex digest
    force: bool = False
    retries: int = 3
    timeout: float = 30.0
    backoff: float | None = None     # first retry's wait (default BACKOFF_SECONDS), doubling


def _disk_error(exc: OSError, what: Path) -> UserError:
    if exc.errno == errno.ENOSPC:
        return UserError(f"disk full while writing {what}; free some space (or set STARGAN_RT_HOME "
                         "to a folder on a larger disk) and run the same command again to resume")
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR):
        return UserError(f"cannot write {what} ({exc.strerror or exc}); the model home "
                         f"{model_home()} must be a writable folder: fix its permissions or set "
                         "STARGAN_RT_HOME to one")
    return UserError(f"cannot write {what} ({exc.strerror or exc}); check the model home "
                     f"{model_home()} or set STARGAN_RT_HOME to another folder")


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


class Progress:
    """Bytes, rate and ETA on one updating line (a terminal) or a line every ~10 % (a log)."""

    def __init__(self, label: str, total: int | None, start: int, stream=None):
        self.label, self.total, self.start = label, total, start
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.t0 = self.last = time.monotonic()
        self.done = start
        self.next_mark = 0.1

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.t0, 1e-6)
        rate = (self.done - self.start) / elapsed
        text = f"  {self.label}: {_size(self.done)}"
        if self.total:
            text += f" of {_size(self.total)} ({100 * self.done / self.total:.0f} %)"
        text += f", {_size(rate)}/s"
        if self.total and rate > 0:
            text += f", ETA {max(self.total - self.done, 0) / rate:.0f} s"
        return text

    def update(self, done: int) -> None:
        self.done = done
        now = time.monotonic()
        if self.tty:
            if now - self.last >= 0.2:
                self.last = now
                print("\r" + self.line().ljust(78), end="", file=self.stream, flush=True)
        elif self.total and done / self.total >= self.next_mark:
            self.next_mark = min(1.0, int(10 * done / self.total) / 10 + 0.1)
            print(self.line(), file=self.stream, flush=True)
        elif not self.total and now - self.last >= 5:
            self.last = now
            print(self.line(), file=self.stream, flush=True)

    def finish(self) -> None:
        if self.tty:
            print("\r" + self.line().ljust(78), file=self.stream, flush=True)


# -- what a payload is ------------------------------------------------------------------------
def _describe_head(head: bytes) -> str:
    text = head[:200].lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in text:
        return "an HTML page"
    if text.startswith((b"{", b"[")):
        return "a JSON document"
    if not head:
        return "an empty body"
    printable = sum(32 <= b < 127 or b in (9, 10, 13) for b in head[:200])
    if printable > 0.95 * min(len(head), 200):
        return f"text ({head[:40].decode('ascii', 'replace').strip()!r}...)"
    return f"binary data starting {head[:8].hex(' ')}"


def _head_matches(kind: str, head: bytes) -> bool:
    if kind == "zip":
        return head.startswith(ZIP_MAGIC)
    # torch.save: a zip (PyTorch >= 1.6) or a legacy pickle (protocol 2+ starts with 0x80)
    return head.startswith(ZIP_MAGIC) or head[:1] == b"\x80"


def _expected(spec: FileSpec) -> str:
    return ("a zip archive" if spec.kind == "zip" and not spec.name.endswith(".npz")
            else "a NumPy .npz file" if spec.kind == "zip" else "a PyTorch checkpoint")


def _check_head(spec: FileSpec, head: bytes, origin: str, html: bool = False) -> None:
    """Refuse a payload that cannot be ``spec`` (``html``: the server said text/html)."""
    if html or not _head_matches(spec.kind, head):
        what = "an HTML page" if html else _describe_head(head)
        hint = (" (a download page or an error page: the link may need ?dl=1, may have moved or "
                "be rate-limited; try again later or use a mirror with --from)"
                if what == "an HTML page" else "")
        raise PayloadError(f"{origin}: received {what} instead of {spec.name}, which should be "
                           f"{_expected(spec)}{hint}")


def verify_file(spec: FileSpec, path: Path, origin: str, expected_sha: str | None) -> str:
    """Type, size and sha256 of a complete file; returns its sha256."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(512)
    _check_head(spec, head, origin)
    if spec.size is not None and size != spec.size:
        raise PayloadError(f"{origin}: {spec.name} is {size:,} bytes, the catalogue says "
                           f"{spec.size:,}; the file is truncated or a different file (pull again, "
                           "or use another --from)")
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    actual = digest.hexdigest()
    if expected_sha and actual != expected_sha.lower():
        raise PayloadError(f"{origin}: {spec.name} has sha256 {actual}, expected {expected_sha}; "
                           "the file is corrupt or not the official one (it was deleted; pull "
                           "again, or from another --from source)")
    return actual


# -- downloading -------------------------------------------------------------------------------
def _content_range_total(value: str | None) -> int | None:
    # "bytes 100-199/200" or "bytes */200"
    if value and "/" in value:
        total = value.rsplit("/", 1)[1].strip()
        if total.isdigit():
            return int(total)
    return None


def _content_range_start(value: str | None) -> int | None:
    if value and value.startswith("bytes ") and "-" in value:
        start = value[6:].split("-", 1)[0].strip()
        if start.isdigit():
            return int(start)
    return None


class _RetryableError(Exception):
    """A transient failure of one attempt."""


def _attempt(url: str, spec: FileSpec, part: Path, timeout: float, log: Callable) -> None:
    """One HTTP request that continues ``part``; returns when the file is complete."""
    offset = part.stat().st_size if part.exists() else 0
    if spec.size is not None and offset > spec.size:
        part.unlink()
        offset = 0
    if spec.size is not None and offset == spec.size and offset:
        return
    headers = {"User-Agent": f"stargan-rt/{__version__}", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        code = exc.code
        if code == 416 and offset:
            total = _content_range_total(exc.headers.get("Content-Range"))
            exc.close()
            if total is None or total == offset:
                return  # the .part already holds the whole file
            part.unlink()
            raise _RetryableError(f"the server's size changed ({total:,} bytes); starting over")
        exc.close()
        if code in (408, 425, 429) or code >= 500:
            raise _RetryableError(f"HTTP {code} {exc.reason}")
        raise PayloadError(f"{url}: the server answered HTTP {code} {exc.reason} for {spec.name}; "
                           "the link is dead or moved: use a mirror with --from URL, or copy the "
                           "file from another machine and use --from DIR")
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, TimeoutError) or "timed out" in str(reason):
            raise _RetryableError(f"no answer within {timeout:g} s (--timeout)")
        raise _RetryableError(f"cannot connect ({reason})")
    with response:
        status = response.status
        ctype = response.headers.get("Content-Type", "")
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if status == 206:
            start = _content_range_start(response.headers.get("Content-Range"))
            if start != offset:
                log(f"  the server resumed at byte {start}, not {offset}; starting over")
                part.unlink(missing_ok=True)
                raise _RetryableError("resume offset mismatch")
        elif offset:
            log(f"  the server ignored the resume request (HTTP {status}); downloading "
                f"{spec.name} from the start")
            offset = 0
        if "text/html" in ctype.lower():
            _check_head(spec, response.read(512), url, html=True)
        total = offset + length if length is not None else spec.size
        limit = spec.size if spec.size is not None else MAX_DOWNLOAD_BYTES
        if total is not None and total > limit:
            raise PayloadError(f"{url}: the server announces {total:,} bytes for {spec.name}, "
                               f"more than the {_size(limit)} allowed; this is not the expected "
                               "file (use another --from source)")
        if spec.size is not None and length is not None and offset + length != spec.size:
            raise PayloadError(f"{url}: the server announces {offset + length:,} bytes for "
                               f"{spec.name}, the catalogue says {spec.size:,}; this is not the "
                               "expected file (use another --from source)")
        progress = Progress(spec.name, total, offset)
        received = 0
        try:
            with open(part, "ab" if offset else "wb") as out:
                while True:
                    try:
                        block = response.read(CHUNK)
                    except (http.client.IncompleteRead, OSError, http.client.HTTPException) as exc:
                        raise _RetryableError(f"connection dropped after {offset + received:,} "
                                              f"bytes ({type(exc).__name__})")
                    if not block:
                        break
                    if offset == 0 and received == 0:
                        _check_head(spec, block, url)
                    if offset + received + len(block) > limit:
                        raise PayloadError(f"{url}: {spec.name} goes on past {_size(limit)}; "
                                           "this is not the expected file (use another --from "
                                           "source)")
                    out.write(block)
                    received += len(block)
                    progress.update(offset + received)
        except PayloadError:
            part.unlink(missing_ok=True)
            raise
        except OSError as exc:
            raise _disk_error(exc, part)
        finally:
            progress.finish()
        if length is not None and received < length:
            raise _RetryableError(f"connection closed after {offset + received:,} of "
                                  f"{offset + length:,} bytes")


def download(urls: list[str], spec: FileSpec, part: Path, options: PullOptions,
             log: Callable) -> str:
    """Fetch ``spec`` into ``part`` from the first URL that works; returns the URL used."""
    failures = []
    transient = False
    for url in urls:
        delay = options.backoff if options.backoff is not None else BACKOFF_SECONDS
        for attempt in range(options.retries + 1):
            kept = part.stat().st_size if part.exists() else 0
            prefix = f"  retry {attempt}: " if attempt else "  "
            if kept:
                log(f"{prefix}resuming {spec.name} at {_size(kept)} from {_host(url)}")
            else:
                log(f"{prefix}downloading {spec.name} from {_host(url)}")
            try:
                _attempt(url, spec, part, options.timeout, log)
                return url
            except _RetryableError as exc:
                reason = str(exc)
                if attempt < options.retries:
                    log(f"  {reason}; retrying in {delay:g} s")
                    time.sleep(delay)
                    delay *= 2
            except PayloadError as exc:
                failures.append(str(exc))
                break
        else:
            transient = True
            failures.append(f"{url}: {reason}")
    detail = failures[0] if len(failures) == 1 else " | ".join(failures)
    if transient:
        kept = part.stat().st_size if part.exists() else 0
        keep = (f"; {_size(kept)} kept in {part}: run the same command again to resume"
                if kept else "; run the same command again to retry (without internet access: "
                "copy the files and use --from DIR)")
        tries = f"{options.retries + 1} {'try' if options.retries == 0 else 'tries'}"
        raise NetworkError(f"download of {spec.name} failed after {tries} per source "
                           f"({detail}){keep}")
    raise PayloadError(detail if len(failures) == 1
                       else f"no source worked for {spec.name}: {detail}")


def _host(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc or url


# -- archives ----------------------------------------------------------------------------------
def unpack(archive: Path, members: list[str], dest: Path, origin: str) -> dict[str, Path]:
    """Take ``members`` (matched by file name, wherever they sit in the archive) out of a zip.
    The whole archive is refused when any member's path is absolute, climbs out with '..', is a
    link, or when the sizes exceed the limits; nothing is written outside ``dest``."""
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            for info in infos:
                name = info.filename.replace("\\", "/")
                parts = PurePosixPath(name).parts
                if (name.startswith("/") or (len(name) > 1 and name[1] == ":")
                        or ".." in parts):
                    raise PayloadError(f"{origin}: the archive holds a member named "
                                       f"{info.filename!r}, whose path escapes the target "
                                       "folder; refusing to unpack it (not the official archive)")
                if (info.external_attr >> 16) & 0o170000 == 0o120000:
                    raise PayloadError(f"{origin}: the archive holds a symbolic link "
                                       f"{info.filename!r}; refusing to unpack it")
            if sum(i.file_size for i in infos) > MAX_ARCHIVE_BYTES:
                raise PayloadError(f"{origin}: the archive unpacks to more than "
                                   f"{_size(MAX_ARCHIVE_BYTES)}; refusing it (not the official "
                                   "archive)")
            found = {}
            for info in infos:
                base = PurePosixPath(info.filename.replace("\\", "/")).name
                if base in members and not info.is_dir() and base not in found:
                    found[base] = info
            missing = [m for m in members if m not in found]
            if missing:
                held = ", ".join(i.filename for i in infos[:8]) or "nothing"
                raise PayloadError(f"{origin}: the archive lacks {', '.join(missing)} (it holds "
                                   f"{held}); this is not the expected archive")
            dest.mkdir(parents=True, exist_ok=True)
            out_paths = {}
            for base, info in found.items():
                target = dest / base
                limit = min(info.file_size, MAX_MEMBER_BYTES)
                written = 0
                with zf.open(info) as src, open(target, "wb") as out:
                    while block := src.read(1 << 20):
                        written += len(block)
                        if written > limit:
                            raise PayloadError(f"{origin}: member {info.filename!r} unpacks to "
                                               "more than its recorded size or the limit; "
                                               "refusing the archive")
                        out.write(block)
                out_paths[base] = target
            return out_paths
    except zipfile.BadZipFile as exc:
        raise PayloadError(f"{origin}: not a readable zip archive ({exc}); the download is "
                           "corrupt or not the official archive (pull again, or use another "
                           "--from)")
    except (zipfile.LargeZipFile, NotImplementedError, EOFError, ValueError) as exc:
        raise PayloadError(f"{origin}: cannot unpack the archive ({exc})")


# -- the pull ----------------------------------------------------------------------------------
class _Lock:
    """An exclusive flock on HOME/.NAME.lock, so two pulls of one model cannot interleave."""

    def __init__(self, path: Path, name: str):
        self.path, self.name, self.fd = path, name, None

    def __enter__(self):
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise _disk_error(exc, self.path)
            try:
                _flock(fd)
            except BlockingIOError:
                try:
                    os.lseek(fd, 0, os.SEEK_SET)
                    holder = os.read(fd, 32).decode("ascii", "replace").strip()
                finally:
                    os.close(fd)
                raise UserError(f"another `stargan-rt pull {self.name}` is running on "
                                f"{self.path.parent} (pid {holder or 'unknown'}); wait for it "
                                "to finish, then run the command again")
            # the holder before us may have removed the file after we opened it: retry then
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, str(os.getpid()).encode())
        self.fd = fd
        return self

    def __exit__(self, *exc):
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self.fd)


def _flock(fd: int) -> None:
    try:
        import fcntl
    except ImportError:  # Windows: O_EXCL-style locking is not worth it here; no lock
        return
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _source_candidates(source: str, entry: Entry, spec: FileSpec) -> list[str]:
    base = source.rstrip("/")
    return [f"{base}/{entry.name}/{spec.name}", f"{base}/{spec.name}"]


def _is_url(value: str) -> bool:
    return urllib.parse.urlsplit(value).scheme in ("http", "https")


def _copy_from_folder(folder: Path, entry: Entry, spec: FileSpec, dest: Path) -> tuple[dict, str]:
    """Files for ``spec`` from an offline folder: FOLDER/NAME/FILE or FOLDER/FILE, or, for an
    archive, its members already unpacked there. Returns (name -> path, origin)."""
    for where in (folder / entry.name, folder):
        candidate = where / spec.name
        if candidate.is_file():
            return {spec.name: candidate}, str(candidate)
    if spec.members:
        for where in (folder / entry.name, folder):
            if all((where / m).is_file() for m in spec.members):
                return {m: where / m for m in spec.members}, str(where)
    also = f" (or its members {', '.join(spec.members)})" if spec.members else ""
    raise UserError(f"--from {folder}: {spec.name}{also} is not in {folder / entry.name} or "
                    f"{folder}; copy it there from a connected machine, where `stargan-rt pull "
                    f"{entry.name}` downloads it (the pulled bundle folder can be copied too)")


@dataclass
class PullResult:
    bundle_path: Path
    already: bool = False
    notes: list[str] = field(default_factory=list)


def pull(name: str, options: PullOptions, log: Callable = print) -> PullResult:
    catalogue = load_catalogue()
    if name not in catalogue:
        raise UserError(f"unknown model {name!r}; the catalogue has: {', '.join(catalogue)} "
                        "(`stargan-rt models` describes them)")
    entry = catalogue[name]
    unknown = [f for f in options.sha256 if f not in {s.name for s in entry.files}]
    if unknown:
        raise UserError(f"--sha256 names {', '.join(unknown)}, which {name} does not download; "
                        f"its files: {', '.join(s.name for s in entry.files)}")
    home = model_home()
    target = home / name
    if (target / "manifest.json").is_file() and not options.force:
        return PullResult(target, already=True)
    folder = None
    if options.source is not None and not _is_url(options.source):
        folder = Path(options.source).expanduser()
        if not folder.is_dir():
            raise UserError(f"--from {options.source}: no such folder; give a folder holding "
                            f"{', '.join(s.name for s in entry.files)} or a mirror URL "
                            "(http:// or https://)")
    log(f"pulling {name}: {entry.title}")
    log(f"  licence: {entry.licence}" + (f" ({entry.licence_url})" if entry.licence_url else ""))
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _disk_error(exc, home)
    with _Lock(home / f".{name}.lock", name):
        if (target / "manifest.json").is_file() and not options.force:
            return PullResult(target, already=True)
        downloads = home / ".downloads" / name
        staging = home / f".{name}.pull-{os.getpid()}"
        for stale in home.glob(f".{name}.pull-*"):  # a killed pull's; we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        try:
            staging.mkdir(parents=True)
            (staging / "files").mkdir()
        except OSError as exc:
            raise _disk_error(exc, staging)
        try:
            result = _pull_into(entry, options, folder, downloads, staging, log)
            shutil.rmtree(downloads, ignore_errors=True)
            return result
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            for folder_left in (downloads, downloads.parent):
                try:
                    folder_left.rmdir()  # only when empty: a resumable .part stays
                except OSError:
                    pass


def _pull_into(entry: Entry, options: PullOptions, folder: Path | None, downloads: Path,
               staging: Path, log: Callable) -> PullResult:
    files: dict[str, Path] = {}       # every file name the import may ask for -> local path
    provenance = []
    for spec in entry.files:
        expected_sha = options.sha256.get(spec.name) or spec.sha256
        if folder is not None:
            found, origin = _copy_from_folder(folder, entry, spec, staging / "files")
            url = None
            if spec.name in found:
                local = found[spec.name]
                sha = verify_file(spec, local, origin, expected_sha)
            else:  # an archive's members, unpacked already: the archive's hash cannot be checked
                if expected_sha:
                    log(f"  note: {spec.name}'s sha256 cannot be checked: its members were "
                        "given unpacked")
                files.update(found)
                provenance.append({"name": spec.name, "from": origin, "unpacked": True,
                                   "members": {m: _sha(p) for m, p in found.items()}})
                continue
        else:
            urls = (_source_candidates(options.source, entry, spec) if options.source
                    else list(spec.urls))
            if not urls:
                raise UserError(f"the catalogue lists no URL for {spec.name}; use --from DIR|URL")
            part = downloads / f"{spec.name}.part"
            try:
                downloads.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise _disk_error(exc, downloads)
            url = download(urls, spec, part, options, log)
            origin = url
            try:
                sha = verify_file(spec, part, url, expected_sha)
            except PayloadError:
                part.unlink(missing_ok=True)
                raise
            local = part
        log(f"  {spec.name}: {local.stat().st_size:,} bytes, sha256 {sha}"
            + (" (verified)" if expected_sha else " (not in the catalogue: recorded)"))
        record = {"name": spec.name, "size": local.stat().st_size, "sha256": sha,
                  "verified": bool(expected_sha)}
        record.update({"url": url} if url else {"from": origin})
        provenance.append(record)
        try:
            if spec.members:
                unpacked = unpack(local, spec.members, staging / "files", origin)
                files.update(unpacked)
            else:
                files[spec.name] = local
        except PayloadError:
            if url:
                local.unlink(missing_ok=True)
            raise
        except OSError as exc:
            raise _disk_error(exc, staging)
    try:
        return _import(entry, files, provenance, staging, log)
    except PayloadError:
        shutil.rmtree(downloads, ignore_errors=True)  # complete but wrong: no use resuming
        raise


def _sha(path: Path) -> str:
    from stargan_rt.bundle import sha256_file
    return sha256_file(path)


def _import(entry: Entry, files: dict[str, Path], provenance: list, staging: Path,
            log: Callable) -> PullResult:
    from stargan_rt.bundle import Bundle, _replace_dir
    from stargan_rt.importer import ImportOptions, import_checkpoint

    spec = entry.importer
    for name, path in list(files.items()):
        if path.suffix == ".part":  # the importer's messages and records name the real file
            named = staging / "files" / name
            try:
                os.link(path, named)
            except OSError:
                shutil.copyfile(path, named)
            files[name] = named
    # the importer finds a v1 -D.ckpt beside its -G.ckpt; give every checkpoint its own name
    options = ImportOptions(arch=entry.arch, domains=list(entry.domains),
                            w_hpf=spec.get("w_hpf"), classes=bool(spec.get("classes")),
                            fan=files[spec["fan"]] if spec.get("fan") else None,
                            discriminator=(files[spec["discriminator"]]
                                           if spec.get("discriminator") else None),
                            name=entry.name)
    ckpt = files[spec["ckpt"]]
    bundle_dir = staging / "bundle"
    try:
        bundle = import_checkpoint(ckpt, bundle_dir, options)
    except UserError as exc:
        raise PayloadError(f"{entry.name}: the downloaded files do not import ({exc})")
    manifest = bundle.manifest
    manifest.config.update(entry.framing)
    kept = []
    for file_spec in entry.files:
        if file_spec.keep:
            shutil.copyfile(files[file_spec.name], bundle_dir / file_spec.name)
            kept.append(file_spec.name)
    manifest.source = {
        "kind": "official-pull",
        "catalogue": entry.name,
        "title": entry.title,
        "licence": entry.licence,
        "licence_url": entry.licence_url,
        "home_page": entry.home_page,
        "downloads": provenance,
        "files": manifest.source.get("files", []),
        "extra_files": kept,
        "notes": manifest.source.get("notes", []),
        "pulled": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    manifest_path = bundle_dir / "manifest.json"
    manifest_path.write_text(manifest.to_json(), encoding="utf-8")
    with open(manifest_path, "rb") as handle:
        os.fsync(handle.fileno())
    Bundle.open(bundle_dir)  # what the verbs will read must open
    target = model_home() / entry.name
    _replace_dir(bundle_dir, target)
    return PullResult(target, notes=list(options.notes))
