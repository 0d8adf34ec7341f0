"""Paths that may be local folders or URIs (s3://, gs://, file://), through pyarrow.fs."""

from __future__ import annotations

import os

import pyarrow.fs as pafs


def is_uri(path: str) -> bool:
    return "://" in str(path)


def normalize(path) -> str:
    """Absolute local path, or the URI unchanged (Ray wants absolute storage paths)."""
    return str(path) if is_uri(path) else os.path.abspath(os.path.expanduser(str(path)))


def join(base, *parts) -> str:
    return "/".join([str(base).rstrip("/"), *parts])


def _fs(path):
    return pafs.FileSystem.from_uri(normalize(path))


def as_uri(fs_path, like) -> str:
    """A path Ray gives without its scheme (pyarrow's 'bucket/key' for s3://bucket/key) as a URI when `like`,
    the storage it lives in, is one; local paths pass through."""
    fs_path = str(fs_path)
    if not is_uri(like) or is_uri(fs_path):
        return fs_path
    return f"{str(like).split('://', 1)[0]}://{fs_path}"


def exists(path) -> bool:
    fs, p = _fs(path)
    return fs.get_file_info(p).type != pafs.FileType.NotFound


def is_file(path) -> bool:
    fs, p = _fs(path)
    return fs.get_file_info(p).type == pafs.FileType.File


def list_dir(path) -> list[str]:
    """The paths of a folder's entries (as `join` would make them), sorted; [] when it does not exist."""
    if not exists(path):
        return []
    fs, p = _fs(path)
    return sorted(join(path, info.base_name) for info in fs.get_file_info(pafs.FileSelector(p)))


def read_bytes(path) -> bytes:
    fs, p = _fs(path)
    with fs.open_input_stream(p) as f:
        return f.read()


def read_text(path) -> str:
    return read_bytes(path).decode()


def write_bytes(path, data: bytes) -> None:
    """Write via a temporary name and a move, so readers never see half a file."""
    fs, p = _fs(path)
    parent = p.rsplit("/", 1)[0]
    fs.create_dir(parent, recursive=True)
    tmp = p + ".tmp"
    with fs.open_output_stream(tmp) as f:
        f.write(data)
    fs.move(tmp, p)


def write_text(path, text: str) -> None:
    write_bytes(path, text.encode())


def remove(path) -> None:
    """Delete a file; nothing when it does not exist."""
    fs, p = _fs(path)
    if fs.get_file_info(p).type == pafs.FileType.File:
        fs.delete_file(p)


def local_copy(path, dest_root) -> str:
    """A local folder holding `path`'s files: `path` itself when local, else a downloaded copy."""
    if not is_uri(path):
        return path
    from filelock import FileLock

    dest = os.path.join(dest_root, str(path).replace("://", "/").strip("/"))
    os.makedirs(dest, exist_ok=True)
    with FileLock(dest + ".lock"):  # workers of one node download once
        if not os.path.exists(os.path.join(dest, ".complete")):
            fs, p = _fs(path)
            pafs.copy_files(p, dest, source_filesystem=fs)
            open(os.path.join(dest, ".complete"), "w").close()
    return dest


def upload(local_dir, uri) -> None:
    fs, p = _fs(uri)
    pafs.copy_files(local_dir, p, destination_filesystem=fs)
