"""Where a policy file came from: the git commit of its checkout, and whether it differs.

A rollout records its policy's origin so that ``status`` and the report can say "policy of
commit 3f2a9c1 (clean)" or warn that the file was edited, not committed, when the rollout
started. Outside a git work tree, or without git, there is simply no commit.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from controller.store.rollouts import PolicySource

GIT_TIMEOUT_S = 3.0
"""How long one git command may take before the file counts as not in a git work tree."""


def policy_source(path: Path, text: str) -> PolicySource:
    """The origin of the policy ``text`` read from ``path`` (``-``: standard input).

    ``git_commit`` is the commit checked out (``HEAD``) in the work tree holding the file;
    ``git_dirty`` says the file differs from it: modified, staged, untracked or ignored (any
    state in which the commit does not hold this text). Outside a work tree, in a repository
    without commits, when git is missing or does not answer within :data:`GIT_TIMEOUT_S`:
    no commit, not dirty (the repository without commits: dirty, no commit).
    """
    if str(path) == "-":
        return PolicySource(path=None, git_commit=None, git_dirty=False, text=text)
    folder = path.absolute().parent
    status = _git(folder, "status", "--porcelain", "--ignored", "--", path.name)
    if status is None:  # not in a work tree, no git, or git failed
        return PolicySource(path=str(path), git_commit=None, git_dirty=False, text=text)
    head = _git(folder, "rev-parse", "--verify", "--quiet", "HEAD")
    commit = head.strip() or None if head is not None else None
    return PolicySource(
        path=str(path), git_commit=commit, git_dirty=bool(status.strip()), text=text
    )


def _git(folder: Path, *args: str) -> str | None:
    """The standard output of ``git -C folder args...``, or None when it fails."""
    try:
        result = subprocess.run(
            ["git", "-C", str(folder), *args],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
            # status must not take the index lock (a concurrent git command would fail).
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout if result.returncode == 0 else None
