#!/usr/bin/env python3
"""Every relative link of README.md and docs/**/*.md resolves.

A markdown link `[text](path)` or `[text](path#anchor)` outside code must name a file or
directory of the tree, relative to the page that holds it; when it names a markdown page with
an anchor (or `#anchor` alone, the page itself), a heading of that page must have that anchor as
GitHub spells it. Links to other sites (http:, https:, mailto:) are not checked.
Usage: tests/docs/check_links.py [SOURCE_DIR]
"""
import os
import re
import sys

LINK = re.compile(r"(?<!!)\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
IMAGE = re.compile(r"!\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"(`+).*?\1")


def prose_lines(path):
    """(line number, text) of each line outside fenced code blocks, inline code blanked."""
    fence = None
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            stripped = line.lstrip()
            if fence is None and (stripped.startswith("```") or stripped.startswith("~~~")):
                fence = stripped[:3]
                continue
            if fence is not None:
                if stripped.startswith(fence):
                    fence = None
                continue
            yield number, INLINE_CODE.sub(lambda m: " " * len(m.group(0)), line.rstrip("\n"))


def slug(heading):
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"`([^`]*)`", r"\1", heading.strip().lower())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path, cache={}):
    if path not in cache:
        seen, found = {}, set()
        fence = None
        with open(path, encoding="utf-8") as f:
            for line in f:
                stripped = line.lstrip()
                if stripped.startswith("```") or stripped.startswith("~~~"):
                    fence = None if fence else stripped[:3]
                    continue
                m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
                if m and not fence:
                    base = slug(m.group(1))
                    n = seen.get(base, 0)
                    seen[base] = n + 1
                    found.add(base if n == 0 else f"{base}-{n}")
        cache[path] = found
    return cache[path]


def pages(root):
    yield os.path.join(root, "README.md")
    for directory, _, files in os.walk(os.path.join(root, "docs")):
        for name in sorted(files):
            if name.endswith(".md"):
                yield os.path.join(directory, name)


def check(root):
    errors, links = [], 0
    for page in pages(root):
        where = os.path.relpath(page, root)
        for number, line in prose_lines(page):
            for m in list(LINK.finditer(line)) + list(IMAGE.finditer(line)):
                target = m.group(1)
                if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                    continue
                links += 1
                path, _, anchor = target.partition("#")
                resolved = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
                if not os.path.exists(resolved):
                    errors.append(f"{where}:{number}: {target}: no such file")
                elif anchor and resolved.endswith(".md") and anchor not in anchors(resolved):
                    errors.append(f"{where}:{number}: {target}: no heading with anchor #{anchor}"
                                  f" in {os.path.relpath(resolved, root)}")
    return errors, links


def main():
    root = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else
                           os.path.join(os.path.dirname(__file__), "..", ".."))
    errors, links = check(root)
    for error in errors:
        print(error)
    print(f"{links} relative links checked, {len(errors)} broken")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
