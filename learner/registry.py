"""The adapter registry: immutable adapter versions and one pointer saying which ones serve.

A light module (no torch): serving imports it to watch the pointer and for the admin API.

    <root>/versions/<version>/   adapter weights + meta.json (lineage, gate report, created_at)
    <root>/pointer.json          {"active", "canary", "canary_share", "previous", "rejected", "updated_at"}
    <root>/audit.jsonl           one line per action: who, what, when, why, forced, before, after
    <root>/stats.json            live feedback per adapter and volume over time, written by the learner

`root` is a local directory or an fsspec URL (`s3://bucket/registry`, `gs://...`, `memory://...`).
Versions are never overwritten (OpenPipe ART's step directories). Locally, publishing and pointer
moves are atomic (write to a temporary name, fsync, rename). On an object store a version is
complete once its meta.json exists (written last) and the pointer is one object PUT, which object
stores make atomic; there, one learner (the only publisher) must write at a time, as in k8s/.
Remote versions are copied once into a local cache, since vLLM loads adapters from local paths.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem
from pydantic import BaseModel, ConfigDict, Field


class RegistryError(RuntimeError):
    """A refused registry action; the message says why and what would allow it."""


class UnknownVersion(RegistryError):
    pass


class Pointer(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    active: str | None = Field(default=None, description="Version serving everyone outside the canary; None: base model.")
    canary: str | None = Field(default=None, description="Version serving `canary_share` of users, sticky per user.")
    canary_share: float = Field(default=0.0, ge=0.0, le=1.0)
    previous: str | None = Field(default=None, description="The active version before the last move (rollback target).")
    rejected: tuple[str, ...] = Field(default=(), description="Versions an operator or the canary policy turned down.")
    updated_at: datetime | None = None


def gate_status(meta: dict[str, Any]) -> str:
    """'passed', 'failed' or 'ungated' (published without a gate report)."""
    report = meta.get("gate_report")  # optional by design: versions published by hand carry none
    if report is None:
        return "ungated"
    return "passed" if report["passed"] else "failed"


class Registry:
    def __init__(self, root: str | Path, cache_dir: Path | None = None) -> None:
        self.url = str(root)
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self.local = isinstance(self.fs, LocalFileSystem)
        self.cache_dir = cache_dir or Path(tempfile.gettempdir()) / "rlhf-loop-registry-cache"

    @classmethod
    def from_settings(cls, settings) -> Registry:
        """The registry a process's settings name (`RLHF_REGISTRY`), cached under RLHF_HOME."""
        return cls(settings.registry_url, settings.home / "cache" / "registry")

    def _path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    def _write(self, path: str, text: str) -> None:
        if not self.local:
            with self.fs.open(path, "w") as stream:  # one PUT: readers see the old object or the new one
                stream.write(text)
            return
        tmp = f"{os.path.dirname(path)}/.{os.path.basename(path)}.{os.getpid()}.tmp"
        with open(tmp, "w") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)

    # -- versions ----------------------------------------------------------------------------------
    def versions(self) -> list[str]:
        try:
            names = [p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self._path("versions"), detail=False)]
        except FileNotFoundError:
            return []
        return sorted(n for n in names if n.startswith("v") and self.fs.exists(self._path("versions", n, "meta.json")))

    def meta(self, version: str) -> dict[str, Any]:
        try:
            return json.loads(self.fs.cat_file(self._path("versions", version, "meta.json")))
        except FileNotFoundError:
            raise UnknownVersion(f"unknown adapter version {version!r}") from None

    def version_path(self, version: str) -> Path:
        """A local directory holding the version's files (a cached copy for remote registries)."""
        self.meta(version)  # refuses unknown or incomplete versions
        if self.local:
            return Path(self._path("versions", version))
        cached = self.cache_dir / self.url.replace("://", "/").strip("/") / version
        if not (cached / "meta.json").exists():
            staging = cached.with_name(f".{version}.{os.getpid()}")
            shutil.rmtree(staging, ignore_errors=True)
            self.fs.get(self._path("versions", version) + "/", str(staging) + "/", recursive=True)
            staging.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(staging, cached)
            except OSError:  # another process cached it first; versions are immutable, so it is the same
                shutil.rmtree(staging, ignore_errors=True)
        return cached

    def publish(self, adapter_dir: Path, lineage: dict[str, Any], gate_report: dict[str, Any] | None = None) -> str:
        """Copy an adapter in as the next version (`v0001`, `v0002`, ...) and return its name."""
        created_at = datetime.now(timezone.utc).isoformat()
        while True:
            existing = [int(v[1:]) for v in self.versions() if v[1:].isdigit()]
            version = f"v{max(existing, default=0) + 1:04d}"
            meta = json.dumps({"version": version, "created_at": created_at, "lineage": lineage, "gate_report": gate_report})
            if not self.local:
                target = self._path("versions", version)
                self.fs.put(str(adapter_dir) + "/", target + "/", recursive=True)
                self._write(target + "/meta.json", meta)  # last: the version exists from here on
                return version
            versions_dir = Path(self._path("versions"))
            versions_dir.mkdir(parents=True, exist_ok=True)
            staging = versions_dir / f".staging-{os.getpid()}-{time.monotonic_ns()}"
            shutil.copytree(adapter_dir, staging)
            self._write(str(staging / "meta.json"), meta)
            try:
                os.rename(staging, versions_dir / version)  # fails if a concurrent publish took the name
                return version
            except OSError:
                shutil.rmtree(staging, ignore_errors=True)

    # -- the pointer and its moves ------------------------------------------------------------------
    def read_pointer(self) -> Pointer:
        try:
            return Pointer.model_validate_json(self.fs.cat_file(self._path("pointer.json")))
        except FileNotFoundError:
            return Pointer()

    def audit(self) -> list[dict[str, Any]]:
        try:
            text = self.fs.cat_file(self._path("audit.jsonl")).decode()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def move_pointer(self, pointer: Pointer, *, actor: str, reason: str, action: str = "move",
                     version: str | None = None, forced: bool = False) -> Pointer:
        """Write a new pointer atomically and append the move to the audit log."""
        for name in (pointer.active, pointer.canary):
            if name is not None:
                self.meta(name)  # refuse to point at something that does not exist
        before = self.read_pointer()
        pointer = pointer.model_copy(update={"updated_at": datetime.now(timezone.utc)})
        self.fs.makedirs(self.root, exist_ok=True)
        self._write(self._path("pointer.json"), pointer.model_dump_json())
        line = json.dumps({
            "at": pointer.updated_at.isoformat(), "actor": actor, "action": action, "version": version,
            "reason": reason, "forced": forced,
            "before": before.model_dump(mode="json", exclude={"updated_at"}),
            "after": pointer.model_dump(mode="json", exclude={"updated_at"}),
        }) + "\n"
        if self.local:
            with open(self._path("audit.jsonl"), "a") as audit:
                audit.write(line)
        else:  # object stores cannot append: rewrite (one learner writes at a time, see the module doc)
            self._write(self._path("audit.jsonl"), "".join(json.dumps(row) + "\n" for row in self.audit()) + line)
        return pointer

    # -- live statistics (the learner writes them; the admin API and dashboard read them) ------------
    def write_stats(self, stats: dict[str, Any]) -> None:
        self.fs.makedirs(self.root, exist_ok=True)
        self._write(self._path("stats.json"), json.dumps(stats))

    def read_stats(self) -> dict[str, Any]:
        try:
            return json.loads(self.fs.cat_file(self._path("stats.json")))
        except FileNotFoundError:
            return {"updated_at": None, "adapters": [], "volume": []}

    @contextlib.contextmanager
    def _exclusive(self):
        """Serialize read-modify-write pointer actions across processes (local registries: a file
        lock; object stores offer no lock, so there one writer at a time is assumed)."""
        if not self.local:
            yield
            return
        self.fs.makedirs(self.root, exist_ok=True)
        with open(self._path(".pointer.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _check_servable(self, version: str, pointer: Pointer, force: bool) -> None:
        status = gate_status(self.meta(version))
        if force:
            return
        if version in pointer.rejected:
            raise RegistryError(f"{version} was rejected; pass force to serve it anyway (recorded in the audit log)")
        if status != "passed":
            raise RegistryError(f"{version} has {status} gates; pass force to serve it anyway (recorded in the audit log)")

    def promote(self, version: str, *, actor: str, reason: str, force: bool = False) -> Pointer:
        """Make `version` active for everyone; the old active becomes `previous`."""
        with self._exclusive():
            pointer = self.read_pointer()
            self._check_servable(version, pointer, force)
            if pointer.active == version:
                raise RegistryError(f"{version} is already active")
            canary = (None, 0.0) if pointer.canary == version else (pointer.canary, pointer.canary_share)
            return self.move_pointer(pointer.model_copy(update={
                "active": version, "previous": pointer.active, "canary": canary[0], "canary_share": canary[1],
            }), actor=actor, reason=reason, action="promote", version=version, forced=force)

    def canary(self, version: str, share: float, *, actor: str, reason: str, force: bool = False) -> Pointer:
        """Serve `version` to `share` of users (sticky per user), beside the active one."""
        with self._exclusive():
            pointer = self.read_pointer()
            if not 0.0 < share <= 1.0:
                raise RegistryError(f"canary share must be in (0, 1], not {share}")
            if pointer.active == version:
                raise RegistryError(f"{version} is already active")
            self._check_servable(version, pointer, force)
            return self.move_pointer(pointer.model_copy(update={"canary": version, "canary_share": share}),
                                     actor=actor, reason=reason, action="canary", version=version, forced=force)

    def rollback(self, *, actor: str, reason: str) -> Pointer:
        """End a canary if one runs; otherwise make `previous` active again."""
        with self._exclusive():
            pointer = self.read_pointer()
            if pointer.canary is not None:
                return self.move_pointer(pointer.model_copy(update={"canary": None, "canary_share": 0.0}),
                                         actor=actor, reason=reason, action="rollback", version=pointer.canary)
            if pointer.previous is None and pointer.active is None:
                raise RegistryError("nothing to roll back: no canary, no active adapter")
            return self.move_pointer(pointer.model_copy(update={"active": pointer.previous, "previous": pointer.active}),
                                     actor=actor, reason=reason, action="rollback", version=pointer.active)

    def reject(self, version: str, *, actor: str, reason: str) -> Pointer:
        """Turn a version down: it leaves the canary, and it needs force to serve from now on."""
        with self._exclusive():
            pointer = self.read_pointer()
            self.meta(version)
            if pointer.active == version:
                raise RegistryError(f"{version} is active: roll back or promote another version first")
            update: dict[str, Any] = {"rejected": tuple(sorted({*pointer.rejected, version}))}
            if pointer.canary == version:
                update.update(canary=None, canary_share=0.0)
            return self.move_pointer(pointer.model_copy(update=update), actor=actor, reason=reason, action="reject",
                                     version=version)

    def summary(self, version: str) -> dict[str, Any]:
        """One version as operators list it: role, gates, creation time, lineage."""
        meta, pointer = self.meta(version), self.read_pointer()
        role = ("active" if pointer.active == version else "canary" if pointer.canary == version
                else "rejected" if version in pointer.rejected else "previous" if pointer.previous == version else "")
        return {"version": version, "role": role, "gates": gate_status(meta), "created_at": meta["created_at"],
                "parent": meta["lineage"].get("parent"), "reward_model": meta["lineage"].get("reward_model")}

    def diff(self, a: str, b: str) -> dict[str, Any]:
        """What differs between two versions: lineage and gate figures, and how far the weights moved."""
        flat_a, flat_b = _flatten(self.meta(a)), _flatten(self.meta(b))
        changed = {key: [flat_a.get(key), flat_b.get(key)] for key in sorted(flat_a.keys() | flat_b.keys())
                   if key not in ("version", "created_at") and flat_a.get(key) != flat_b.get(key)}
        return {"a": a, "b": b, "changed": changed, "weights": _weight_distance(self.version_path(a), self.version_path(b))}


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _flatten(item, f"{prefix}{key}.").items()}
    if isinstance(value, list) and value and all(isinstance(item, dict) and "name" in item for item in value):
        return {k: v for item in value for k, v in _flatten(item, f"{prefix}{item['name']}.").items()}
    return {prefix.rstrip("."): value}


def _weight_distance(a: Path, b: Path) -> dict[str, Any]:
    """Relative L2 distance ||b - a|| / ||a|| over the LoRA tensors both versions share (numpy: no torch)."""
    import numpy as np
    from safetensors import safe_open

    name = "adapter_model.safetensors"
    if not (a / name).exists() or not (b / name).exists():
        return {"comparable": False, "why": f"a version has no {name}"}
    with safe_open(a / name, framework="numpy") as left, safe_open(b / name, framework="numpy") as right:
        shared = sorted(set(left.keys()) & set(right.keys()))
        if not shared or any(left.get_slice(k).get_shape() != right.get_slice(k).get_shape() for k in shared):
            return {"comparable": False, "why": "different tensor names or shapes (e.g. another LoRA rank)"}
        difference = norm = 0.0
        for key in shared:
            x, y = left.get_tensor(key).astype(np.float64), right.get_tensor(key).astype(np.float64)
            difference += float(((y - x) ** 2).sum())
            norm += float((x ** 2).sum())
    return {"comparable": True, "tensors": len(shared), "relative_l2": (difference / norm) ** 0.5 if norm else None}
