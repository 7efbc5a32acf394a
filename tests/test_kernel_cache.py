"""The cache of compiled kernels (pysnn.native) never loads a library another user could have
written, verifies each library against the record of its build before loading it, and ignores
relative or empty cache locations (issue 25)."""

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

import pysnn.native as native

CC = shutil.which(os.environ.get("CC") or "cc") or shutil.which("gcc") or shutil.which("clang")
needs_cc = pytest.mark.skipif(CC is None, reason="no C compiler")


def reference_library() -> str:
    """The kernel library this process built and loaded (copied by the fake compiler below, so
    that the tests never wait for a real build)."""
    lib = native._library()
    if lib is None:
        pytest.skip(f"the kernels do not build here: {native._reason}")
    return lib._name


@pytest.fixture
def fake_compiler(monkeypatch):
    """Replace the C compiler by a copy of the already built library; count the builds."""
    reference = reference_library()
    builds = []

    def compile_(compiler, flags, output, source):
        builds.append(output)
        shutil.copyfile(reference, output)

    monkeypatch.setattr(native, "_run_compiler", compile_)
    return builds


def plant(path: Path, marker: Path) -> None:
    """Compile a library whose constructor writes ``marker``: what an attacker would plant."""
    source = path.parent / "evil.c"
    source.write_text(
        "#include <stdio.h>\n"
        "__attribute__((constructor)) static void run(void) {\n"
        f'  FILE *f = fopen("{marker}", "w"); if (f) fclose(f);\n'
        "}\n"
    )
    subprocess.run([CC, "-shared", "-fPIC", "-o", str(path), str(source)], check=True)
    source.unlink()


@pytest.fixture
def shared_tmp(tmp_path, monkeypatch):
    """A world-writable temporary folder (like /tmp) as tempfile's folder, and a cache folder
    that cannot be created (below a regular file), so the kernels go to the temporary folder."""
    shared = tmp_path / "shared-tmp"
    shared.mkdir()
    shared.chmod(0o1777)
    monkeypatch.setattr(tempfile, "tempdir", str(shared))
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("PYSNN_CACHE_DIR", str(blocker / "cache"))
    monkeypatch.setattr(native, "_private_tmp", None)
    return shared


@needs_cc
def test_planted_library_in_the_shared_temporary_folder_is_never_loaded(
    fake_compiler, tmp_path, shared_tmp
):
    _, _, name = native._build_spec()
    predictable = shared_tmp / f"pysnn-{os.getuid()}"
    predictable.mkdir()
    predictable.chmod(0o777)  # made by another user, writable by all
    marker = tmp_path / "constructor-ran"
    plant(predictable / name, marker)
    lib = native._build()
    assert not marker.exists()  # the planted constructor never ran
    assert Path(lib._name).parent != predictable
    assert (Path(lib._name).parent.stat().st_mode & 0o777) == 0o700 and len(fake_compiler) == 1


@needs_cc
def test_world_writable_cache_dir_is_refused_with_a_warning(fake_compiler, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o777)
    monkeypatch.setenv("PYSNN_CACHE_DIR", str(cache))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    _, _, name = native._build_spec()
    marker = tmp_path / "constructor-ran"
    plant(cache / name, marker)
    with pytest.warns(UserWarning, match=r"not private: .*cache can be written by other users"):
        lib = native._build()
    assert not marker.exists() and Path(lib._name).parent != cache


def test_fresh_cache_folder_is_private_and_records_the_build(tmp_path, fake_compiler):
    compiler, flags, name = native._build_spec()
    target = native._compile_into(tmp_path / "cache", name, compiler, flags)
    assert (tmp_path / "cache").stat().st_mode & 0o777 == 0o700
    record = target.with_suffix(".json").read_text()
    for what in ("source_sha256", "sha256", "size", compiler):
        assert what in record
    assert native._compile_into(tmp_path / "cache", name, compiler, flags) == target
    assert len(fake_compiler) == 1  # verified and reused, not rebuilt


@pytest.mark.parametrize(
    "damage, reason",
    [
        ("truncate", "truncated or modified"),
        ("flip", "truncated or modified"),
        ("group-writable", "can be written by other users"),
        ("other-flags", "describes another build"),
    ],
)
def test_damaged_or_foreign_cached_library_is_rebuilt_with_a_warning(
    tmp_path, fake_compiler, damage, reason
):
    compiler, flags, name = native._build_spec()
    target = native._compile_into(tmp_path, name, compiler, flags)
    good = target.read_bytes()
    if damage == "truncate":
        target.write_bytes(good[: len(good) // 2])
    elif damage == "flip":
        target.write_bytes(good[:1000] + bytes([good[1000] ^ 1]) + good[1001:])
    elif damage == "group-writable":
        target.chmod(0o664)
    else:
        flags = flags + ("-DOTHER",)  # the same file name, recorded with other flags
    with pytest.warns(UserWarning, match=reason):
        again = native._compile_into(tmp_path, name, compiler, flags)
    assert again.read_bytes() == good and len(fake_compiler) == 2


def test_truncated_cached_library_does_not_kill_the_process(tmp_path):
    """Loaded as before (``dlopen`` of the truncated file), this died of SIGBUS."""
    reference = reference_library()
    code = textwrap.dedent(f"""
        import shutil, warnings
        import pysnn.native as native
        native._run_compiler = lambda compiler, flags, output, source: shutil.copyfile({reference!r}, output)
        compiler, flags, name = native._build_spec()
        target = native._compile_into(native._cache_dir(), name, compiler, flags)
        data = target.read_bytes()
        target.write_bytes(data[: len(data) // 3])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            print(native.available(), native.status())
        print([str(w.message) for w in caught])
        """)
    env = dict(os.environ, PYSNN_CACHE_DIR=str(tmp_path / "cache"), PYSNN_NATIVE="1")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "True fused CPU kernels in use" in out.stdout
    assert "truncated or modified" in out.stdout and "rebuilt" in out.stdout


@pytest.mark.parametrize(
    "env",
    [{"HOME": "", "XDG_CACHE_HOME": ""}, {"XDG_CACHE_HOME": "relative/cache"}, {"HOME": "rel"}],
)
def test_empty_home_and_relative_xdg_cache_home_are_ignored(tmp_path, monkeypatch, env):
    monkeypatch.delenv("PYSNN_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    folder = native._cache_dir()
    assert folder.is_absolute()
    assert folder != Path("/.cache/pysnn") and "relative" not in str(folder)
    assert not str(folder).startswith(str(tmp_path / "rel"))


def test_absolute_xdg_cache_home_is_used(tmp_path, monkeypatch):
    monkeypatch.delenv("PYSNN_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert native._cache_dir() == tmp_path / "xdg" / "pysnn"
