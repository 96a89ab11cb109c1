"""A policy file's origin, from a real git repository."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from controller.runtime.gitsource import policy_source

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")

_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args], env=_ENV, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "policies").mkdir(parents=True)
    git(root, "init", "-q")
    (root / "policies" / "comments.yaml").write_text("kind: RolloutPolicy\n")
    (root / "policies" / "orders.yaml").write_text("kind: RolloutPolicy\n")
    (root / ".gitignore").write_text("*.local.yaml\n")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "policies")
    return root


def test_clean_file_in_a_checkout(repo: Path) -> None:
    path = repo / "policies" / "comments.yaml"
    source = policy_source(path, "text as given")
    assert source.git_commit == git(repo, "rev-parse", "HEAD")
    assert len(source.git_commit) == 40
    assert source.git_dirty is False
    assert source.path == str(path)
    assert source.text == "text as given"


def test_modified_file_is_dirty_other_files_do_not_matter(repo: Path) -> None:
    (repo / "policies" / "orders.yaml").write_text("changed\n")
    assert policy_source(repo / "policies" / "comments.yaml", "").git_dirty is False
    source = policy_source(repo / "policies" / "orders.yaml", "")
    assert source.git_dirty is True
    assert source.git_commit == git(repo, "rev-parse", "HEAD")


def test_staged_change_is_dirty(repo: Path) -> None:
    (repo / "policies" / "comments.yaml").write_text("changed\n")
    git(repo, "add", "policies/comments.yaml")
    assert policy_source(repo / "policies" / "comments.yaml", "").git_dirty is True


@pytest.mark.parametrize("name", ["new.yaml", "mine.local.yaml"])
def test_untracked_or_ignored_file_is_dirty(repo: Path, name: str) -> None:
    (repo / "policies" / name).write_text("new\n")
    source = policy_source(repo / "policies" / name, "")
    assert source.git_dirty is True
    assert source.git_commit == git(repo, "rev-parse", "HEAD")


def test_relative_path_from_elsewhere(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(repo / "policies")
    source = policy_source(Path("comments.yaml"), "")
    assert source.path == "comments.yaml"
    assert source.git_commit == git(repo, "rev-parse", "HEAD")
    assert source.git_dirty is False


def test_repository_without_commits(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    (tmp_path / "p.yaml").write_text("x\n")
    source = policy_source(tmp_path / "p.yaml", "")
    assert source.git_commit is None
    assert source.git_dirty is True


def test_outside_a_work_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))  # whatever holds /tmp
    (tmp_path / "p.yaml").write_text("x\n")
    source = policy_source(tmp_path / "p.yaml", "x\n")
    assert (source.path, source.git_commit, source.git_dirty) == (
        str(tmp_path / "p.yaml"),
        None,
        False,
    )


def test_git_missing(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(repo))  # no git there
    source = policy_source(repo / "policies" / "comments.yaml", "")
    assert (source.git_commit, source.git_dirty) == (None, False)


def test_standard_input() -> None:
    source = policy_source(Path("-"), "from stdin")
    assert (source.path, source.git_commit, source.git_dirty, source.text) == (
        None,
        None,
        False,
        "from stdin",
    )
