"""Atomic outputs: replacement with never a moment without the output, cleanup of killed writers' leftovers."""

import errno
import os
import subprocess
import sys
import threading

import pytest

from bivrec import atomic
from bivrec.atomic import OutputError, atomic_path, clean_stale_temporaries, publish


def _write_folder(target, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "value.txt").write_text(text)


def test_replacing_a_folder_never_leaves_a_moment_without_it(tmp_path):
    target = tmp_path / "out"
    _write_folder(target, "0")
    missing, seen, stop = [], set(), threading.Event()

    def watch():
        while not stop.is_set():
            try:
                seen.add((target / "value.txt").read_text())
            except FileNotFoundError:
                missing.append(1)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for version in range(1, 300):
            _write_folder(target, str(version))
    finally:
        stop.set()
        watcher.join()
    assert atomic.exchange(tmp_path / "out", tmp_path / "out")  # this platform has the atomic swap
    assert missing == [], f"the output was absent {len(missing)} time(s) while being replaced"
    assert (target / "value.txt").read_text() == "299" and len(seen) > 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"], "no temporary or old version is left"


def test_without_an_exchange_call_the_fallback_still_replaces(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "exchange", lambda a, b: False)
    target = tmp_path / "out"
    _write_folder(target, "old")
    _write_folder(target, "new")
    assert (target / "value.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_file_and_folder_replace_each_other(tmp_path):
    target = tmp_path / "out"
    target.write_text("a file")
    _write_folder(target, "a folder")
    assert (target / "value.txt").read_text() == "a folder"
    with atomic_path(target) as tmp:
        tmp.write_text("a file again")
    assert target.read_text() == "a file again"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_leftovers_of_a_killed_writer_are_removed_but_a_live_writers_are_kept(tmp_path):
    # a real writer killed with SIGKILL inside the block
    code = ("import os, signal, sys; from bivrec.atomic import atomic_path\n"
            "with atomic_path(sys.argv[1]) as tmp:\n"
            "    tmp.mkdir(); (tmp / 'half').write_text('x'); os.kill(os.getpid(), signal.SIGKILL)\n")
    target = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", code, str(target)], env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert proc.returncode == -9
    killed = [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]
    assert len(killed) == 1 and (killed[0] / "half").exists() and not target.exists()

    alive = tmp_path / f".out.{os.getppid()}.0123abcd.tmp"  # a writer that still runs (our parent)
    alive.mkdir()
    other = tmp_path / ".out.json.1.0123abcd.tmp"  # another output's temporary: not ours to judge
    other.mkdir()
    assert clean_stale_temporaries(target) == killed
    _write_folder(target, "done")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out", alive.name, other.name])


def test_a_failing_block_leaves_the_old_output_and_no_temporary(tmp_path):
    target = tmp_path / "out"
    _write_folder(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / "value.txt").write_text("half")
            raise RuntimeError("crash")
    assert (target / "value.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_disk_full_is_an_output_error_naming_the_output(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(OutputError, match="cannot write .*out.json: no space left on device; nothing was written"):
        with atomic_path(target) as tmp:
            tmp.write_text("{")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert list(tmp_path.iterdir()) == []


def test_publish_moves_a_finished_folder_in_place_of_the_old(tmp_path):
    (tmp_path / "staging").mkdir()
    (tmp_path / "staging" / "a").write_text("new")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "b").write_text("old")
    publish(tmp_path / "staging", tmp_path / "out")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["a"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
