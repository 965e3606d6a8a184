#!/usr/bin/env python3
"""Replaces what lies between two marker lines of a docs page with a generated file's text.

Usage: scripts/splice-generated.py PAGE NAME GENERATED
The page carries `<!-- NAME: begin -->` and `<!-- NAME: end -->`; what lies between them becomes
GENERATED's text (scripts/options-reference.sh and scripts/cli-reference.sh).
"""
import sys

page, name, generated = sys.argv[1:4]
begin = f"<!-- {name}: begin -->\n"
end = f"<!-- {name}: end -->"
text = open(page).read()
i, j = text.index(begin) + len(begin), text.index(end)
open(page, "w").write(text[:i] + open(generated).read() + text[j:])
