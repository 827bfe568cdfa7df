"""The adapter registry: immutable adapter versions and one pointer saying which ones serve.

A light module (no torch): serving imports it to watch the pointer.

    <root>/versions/<version>/   adapter weights + meta.json (lineage, gate report, created_at)
    <root>/pointer.json          {"active", "canary", "canary_share", "previous", "updated_at"}
    <root>/audit.jsonl           one line per pointer move: who, what, when, why

Versions are never overwritten (OpenPipe ART's step directories); publishing and pointer moves
are atomic (write to a temporary name, fsync, rename).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class RegistryError(RuntimeError):
    pass


class Pointer(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    active: str | None = Field(default=None, description="Version serving everyone outside the canary; None: base model.")
    canary: str | None = Field(default=None, description="Version serving `canary_share` of users, sticky per user.")
    canary_share: float = Field(default=0.0, ge=0.0, le=1.0)
    previous: str | None = Field(default=None, description="The active version before the last move (rollback target).")
    updated_at: datetime | None = None


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as stream:
        stream.write(text)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(tmp, path)


class Registry:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.versions_dir = root / "versions"
        self.pointer_path = root / "pointer.json"
        self.audit_path = root / "audit.jsonl"

    def version_path(self, version: str) -> Path:
        path = self.versions_dir / version
        if not (path / "meta.json").is_file():
            raise RegistryError(f"unknown adapter version {version!r}")
        return path

    def versions(self) -> list[str]:
        if not self.versions_dir.is_dir():
            return []
        return sorted(p.name for p in self.versions_dir.iterdir() if (p / "meta.json").is_file())

    def meta(self, version: str) -> dict[str, Any]:
        return json.loads((self.version_path(version) / "meta.json").read_text())

    def publish(self, adapter_dir: Path, lineage: dict[str, Any]) -> str:
        """Copy an adapter in as the next version (`v0001`, `v0002`, ...) and return its name."""
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        staging = self.versions_dir / f".staging-{os.getpid()}-{time.monotonic_ns()}"
        shutil.copytree(adapter_dir, staging)
        created_at = datetime.now(timezone.utc).isoformat()
        while True:
            existing = [int(v[1:]) for v in self.versions() if v[1:].isdigit()]
            version = f"v{max(existing, default=0) + 1:04d}"
            _write_atomic(staging / "meta.json", json.dumps({"version": version, "created_at": created_at, "lineage": lineage}))
            try:
                os.rename(staging, self.versions_dir / version)  # fails if a concurrent publish took the name
                return version
            except OSError:
                continue

    def read_pointer(self) -> Pointer:
        if not self.pointer_path.exists():
            return Pointer()
        return Pointer.model_validate_json(self.pointer_path.read_text())

    def move_pointer(self, pointer: Pointer, *, actor: str, reason: str) -> Pointer:
        """Write a new pointer atomically and append the move to the audit log."""
        for version in (pointer.active, pointer.canary):
            if version is not None:
                self.version_path(version)  # refuse to point at something that does not exist
        before = self.read_pointer()
        pointer = pointer.model_copy(update={"updated_at": datetime.now(timezone.utc)})
        self.root.mkdir(parents=True, exist_ok=True)
        _write_atomic(self.pointer_path, pointer.model_dump_json())
        with open(self.audit_path, "a") as audit:
            audit.write(json.dumps({
                "at": pointer.updated_at.isoformat(), "actor": actor, "reason": reason,
                "before": before.model_dump(mode="json", exclude={"updated_at"}),
                "after": pointer.model_dump(mode="json", exclude={"updated_at"}),
            }) + "\n")
        return pointer
