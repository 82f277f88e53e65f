"""Print the engines benchmark (pytest-benchmark JSON) as a side-by-side ratio table.

    python benchmarks/ratio_table.py bench.json [--baseline torch-fp32]
"""
from __future__ import annotations

import argparse
import json
import platform


def rows(data: dict) -> list[dict]:
    out = []
    for bench in data["benchmarks"]:
        info = bench.get("extra_info", {})
        name = f"{info.get('target', '?')}-{info.get('precision', '?')}"
        stats = bench["stats"]
        out.append({"name": name, "engine": info.get("engine", ""), "batch": info.get("batch", 1),
                    "median_ms": stats["median"] * 1e3, "min_ms": stats["min"] * 1e3,
                    "rounds": stats["rounds"]})
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json")
    parser.add_argument("--baseline", default="torch-fp32")
    args = parser.parse_args(argv)
    with open(args.json) as handle:
        data = json.load(handle)
    table = rows(data)
    base = next((r for r in table if r["name"] == args.baseline), table[0])
    machine = data.get("machine_info", {})
    print(f"machine: {machine.get('cpu', {}).get('brand_raw', platform.processor())}, "
          f"{machine.get('cpu', {}).get('count', '?')} cores; batch {base['batch']}; "
          f"baseline {base['name']}")
    print(f"{'engine':<18} {'median ms':>10} {'min ms':>8} {'frames/s':>9} {'speed-up':>9}  detail")
    for r in sorted(table, key=lambda r: r["median_ms"], reverse=True):
        fps = r["batch"] * 1e3 / r["median_ms"]
        print(f"{r['name']:<18} {r['median_ms']:>10.1f} {r['min_ms']:>8.1f} {fps:>9.1f} "
              f"{base['median_ms'] / r['median_ms']:>8.2f}x  {r['engine']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
