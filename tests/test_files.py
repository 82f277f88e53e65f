"""The one atomic write (stargan_rt.files.write_atomic)."""
from __future__ import annotations

import errno
import os
import stat

import pytest

from stargan_rt.errors import UserError
from stargan_rt.files import write_atomic


def test_writes_bytes_text_and_through_a_writer(tmp_path):
    write_atomic(tmp_path / "a" / "bytes.bin", b"\x00\x01")
    write_atomic(tmp_path / "text.txt", "héllo\n")
    write_atomic(tmp_path / "writer.txt", lambda tmp: tmp.write_text("from a writer"))
    assert (tmp_path / "a" / "bytes.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "text.txt").read_text(encoding="utf-8") == "héllo\n"
    assert (tmp_path / "writer.txt").read_text() == "from a writer"
    assert sorted(p.name for p in tmp_path.rglob("*.tmp")) == []


def test_new_files_get_the_mode_a_plain_open_gives(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    atomic = write_atomic(tmp_path / "atomic.txt", "x")
    assert stat.S_IMODE(atomic.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)


def test_a_failed_write_keeps_the_old_file_and_leaves_no_debris(tmp_path):
    target = write_atomic(tmp_path / "report.json", "old")

    def failing(tmp):
        tmp.write_text("half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(UserError, match="cannot write") as err:
        write_atomic(target, failing)
    assert str(target) in str(err.value)
    assert target.read_text() == "old" and list(tmp_path.glob("*.tmp")) == []
    with pytest.raises(RuntimeError, match="custom"):
        write_atomic(target, failing, lambda where, exc: RuntimeError(f"custom {where}"))
    assert target.read_text() == "old" and list(tmp_path.glob("*.tmp")) == []
