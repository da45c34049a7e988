"""Rewrites CUDA sources for the emulated backend: the two constructs C++ has no syntax for.

    kernel<A, B><<<grid, block, smem, stream>>>(args...)
        -> ::mixdiff::emu::launch_kernel(::mixdiff::emu::LaunchConfig(grid, block, smem, stream),
                                         "kernel<A, B>", kernel<A, B>, args...)
    __shared__ T name[N];           -> T (&name)[N] = <this block's storage of the declaration>;
    extern __shared__ ... name[];   -> #define name (<this block's dynamic shared memory>)

Everything else is left to the host compiler and csrc/emu/include. Lines are kept one for one and
each output starts with a #line directive, so diagnostics and the emulator's reports name the original
file and line. Any `__shared__`, `<<<` or `>>>` the rules do not cover is an error.

usage: rewrite.py OUT_DIR ROOT FILE...   (each FILE is written to OUT_DIR / its path relative to ROOT,
                                          a .cu file as .cu.cpp)
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

LAUNCH = re.compile(r"^(?P<indent>\s*)(?P<kernel>[^<\s][^;]*?)<<<(?P<cfg>.+?)>>>\((?P<rest>.*)$")
EXTERN_SHARED = re.compile(r"^\s*extern\s+__shared__\s+(?:__align__\(\d+\)\s+)?[\w:\s]+?\s(?P<name>\w+)\s*\[\s*\]\s*;")
SHARED = re.compile(r"__shared__\s+(?:__align__\((?P<align>\d+)\)\s+)?(?P<type>[\w:<>,\s]+?)\s+(?P<name>\w+)"
                    r"(?P<dims>(?:\[[^\]]+\])*)\s*;")


def rewrite_line(line: str, where: str) -> str:
    m = EXTERN_SHARED.match(line)
    if m:
        return f"#define {m['name']} (::mixdiff::emu::dynamic_shared())\n"
    m = SHARED.search(line)
    if m:
        t, name, dims = m["type"].strip(), m["name"], m["dims"]
        align = m["align"] or f"alignof({t})"
        decl = (f"{t} (&{name}){dims} = *static_cast<{t} (*){dims}>("
                f"::mixdiff::emu::static_shared(sizeof({t}{dims}), {align}));") if dims else (
                f"{t}& {name} = *static_cast<{t}*>(::mixdiff::emu::static_shared(sizeof({t}), {align}));")
        line = line[:m.start()] + decl + line[m.end():]
    m = LAUNCH.match(line)
    if m:
        kernel, rest = m["kernel"].strip(), m["rest"]
        sep = "" if rest.lstrip().startswith(")") else ", "
        line = (f"{m['indent']}::mixdiff::emu::launch_kernel(::mixdiff::emu::LaunchConfig({m['cfg']}), "
                f"\"{kernel}\", {kernel}{sep}{rest}\n")
    code = line.split("//", 1)[0]
    for token in ("__shared__", "<<<", ">>>"):
        if token in code:
            raise SystemExit(f"{where}: csrc/emu/rewrite.py does not know this use of {token}: {line.strip()}")
    return line if line.endswith("\n") else line + "\n"


def main(argv: list[str]) -> None:
    out_dir, root = Path(argv[1]), Path(argv[2]).resolve()
    for name in argv[3:]:
        src = Path(name).resolve()
        lines = src.read_text().splitlines(keepends=True)
        body = [f'#line 1 "{src}"\n'] + [rewrite_line(l, f"{src}:{i + 1}") for i, l in enumerate(lines)]
        dst = out_dir / src.relative_to(root)
        if dst.suffix == ".cu":  # compiled as C++
            dst = dst.with_name(dst.name + ".cpp")
        dst.parent.mkdir(parents=True, exist_ok=True)
        text = "".join(body)
        if not dst.exists() or dst.read_text() != text:  # unchanged outputs keep their timestamps
            dst.write_text(text)


if __name__ == "__main__":
    main(sys.argv)
