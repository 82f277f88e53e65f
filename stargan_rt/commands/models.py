"""`stargan-rt models`: the built-in demo models, the catalogue, and what is installed where."""
from __future__ import annotations

import os


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "models", help="list the named models: built-in demos, catalogue, installed",
        description="List the names --model accepts: the built-in demo models, the official "
                    "pretrained models of the catalogue (installed or not) and any other bundle "
                    "in the model home, with architecture, size, domains and provenance.")
    parser.set_defaults(func=run)


def _folder_size(path) -> int:
    total = 0
    for root, _, names in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, n)) for n in names)
    return total


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _provenance(manifest) -> str:
    source = manifest.source or {}
    downloads = source.get("downloads") or []
    if source.get("kind") == "official-pull" and downloads:
        first = downloads[0]
        where = first.get("url") or first.get("from") or "?"
        sha = first.get("sha256")
        check = "verified" if first.get("verified") else "recorded"
        return (f"pulled {source.get('pulled', '')} from {where}"
                + (f", sha256 {sha[:16]}... ({check})" if sha else ""))
    files = source.get("files") or []
    if files:
        return f"{source.get('kind', 'imported')} from {', '.join(f['name'] for f in files)}"
    return source.get("kind", "") or "unknown origin"


def run(args) -> int:
    from stargan_rt.bundle import Bundle
    from stargan_rt.catalogue import (DEMO_NAMES, installed_names, installed_path,
                                      load_catalogue, model_home)
    from stargan_rt.defaults import resolve_model
    from stargan_rt.errors import UserError

    home = model_home()
    env = " ($STARGAN_RT_HOME)" if os.environ.get("STARGAN_RT_HOME") else \
        " (set STARGAN_RT_HOME to move it)"
    print(f"model home: {home}{env}")
    catalogue = load_catalogue()

    def show(name, arch, size, domains, lines):
        print(f"\n{name:<12} {arch}  {size:>4} px  {', '.join(domains)}")
        for line in lines:
            print(f"    {line}")

    for name in DEMO_NAMES:
        try:
            bundle = Bundle.open(resolve_model(name))
        except UserError as exc:
            show(name, name[-2:], 0, [], [f"missing: {exc}"])
            continue
        m = bundle.manifest
        show(name, m.arch, m.image_size, m.domain_names,
             ["built-in demo, trained minutes on synthetic faces: real faces come out blurred",
              f"installed: {bundle.path} ({_mb(_folder_size(bundle.path))})"])
    for name, entry in catalogue.items():
        lines = [f"{entry.title}; licence {entry.licence}"]
        if entry.can:
            lines.append(f"can: {entry.can}")
        if entry.cannot:
            lines.append(f"cannot: {entry.cannot}")
        known = [s.size for s in entry.files]
        if all(size is not None for size in known):
            lines.append(f"download: {_mb(sum(known))}")
        path = installed_path(name)
        try:
            bundle = Bundle.open(path) if (path / "manifest.json").is_file() else None
        except UserError as exc:
            bundle = None
            lines.append(f"broken install: {exc}; run `stargan-rt pull {name} --force`")
        if bundle is not None:
            lines.append(f"installed: {path} ({_mb(_folder_size(path))}), "
                         f"{_provenance(bundle.manifest)}")
        elif not any(line.startswith("broken") for line in lines):
            lines.append(f"not installed: stargan-rt pull {name}")
        show(name, entry.arch, entry.image_size, entry.domains, lines)
    for name in installed_names():
        if name in catalogue:
            continue
        path = installed_path(name)
        try:
            m = Bundle.open(path).manifest
        except UserError as exc:
            show(name, "?", 0, [], [f"broken bundle: {exc}"])
            continue
        show(name, m.arch, m.image_size, m.domain_names,
             [f"installed: {path} ({_mb(_folder_size(path))}), {_provenance(m)}"])
    return 0
