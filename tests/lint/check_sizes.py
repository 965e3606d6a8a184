#!/usr/bin/env python3
"""No function over 150 lines; no source file over 1,000 lines without a reason at its top.

The limits the tree keeps (issue 52): a C++ file (*.cc, *.h) of the repository longer than
MAX_FILE_LINES lines must say why in its first 20 lines, in a comment beginning
`// Longer than 1,000 lines because`; a function body (a function, a member function defined in
its class, a TEST body; lambdas count in the function that holds them) longer than
MAX_FUNCTION_LINES lines, from its opening brace to its closing one, fails whatever the file says.

The scanner blanks comments, string and character literals (raw strings too), then matches braces:
a `{` opens a function body when what precedes it since the last `;`, `{` or `}` ends in a
parameter list (`)` followed only by qualifiers, a trailing return type, or a constructor's
member initialisers) and does not begin with a control keyword, in namespace or class scope.
Usage: tests/lint/check_sizes.py SOURCE_DIR
"""
import os
import re
import subprocess
import sys

MAX_FILE_LINES = 1000
MAX_FUNCTION_LINES = 150
REASON = "// Longer than 1,000 lines because"
CONTROL = re.compile(r"^\s*(if|for|while|switch|catch|do|else|try)\b")
SCOPE = re.compile(r"\b(namespace|class|struct|union|enum)\b[^()]*$")


def blank_literals(text):
    """text with comments and literals replaced by spaces, newlines kept (line numbers hold)."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end < 0 else end
            out.append(" " * (end - i))
            i = end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            end = n if end < 0 else end + 2
            out.append(re.sub(r"[^\n]", " ", text[i:end]))
            i = end
        elif c == "R" and text.startswith('"', i + 1) and (i == 0 or not text[i - 1].isalnum()):
            match = re.match(r'R"([^(\s]*)\(', text[i:])
            if not match:
                out.append(c)
                i += 1
                continue
            close = ")" + match.group(1) + '"'
            end = text.find(close, i + len(match.group(0)))
            end = n if end < 0 else end + len(close)
            out.append('""' + re.sub(r"[^\n]", " ", text[i + 2:end]))
            i = end
        elif c in "\"'":
            if c == "'" and i > 0 and text[i - 1].isalnum():  # digit separator: 1'000
                out.append(" ")
                i += 1
                continue
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            out.append(c + " " * (min(j, n) - i - 1) + c)
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def is_function_head(head):
    """Whether the text before a `{` (since the last ; { or }) is a function's signature."""
    head = head.strip()
    if not head or CONTROL.match(head) or head.startswith("#") or SCOPE.search(head):
        return False
    # The parameter list: the first top-level parenthesis (the second after `operator`).
    open_at = head.find("(")
    if open_at > 0 and head[:open_at].rstrip().endswith("operator"):
        open_at = head.find("(", head.find(")", open_at) + 1)
    if open_at < 0 or "=" in head[:open_at].replace("operator=", "").replace("==", ""):
        return False  # no parameters, or an initialiser (a lambda assigned to a variable)
    depth = 0
    for index in range(open_at, len(head)):
        depth += {"(": 1, ")": -1}.get(head[index], 0)
        if depth == 0:
            rest = head[index + 1:]
            break
    else:
        return False
    if re.match(r"\s*:(?!:)", rest):
        return True  # a constructor's member initialisers
    return re.fullmatch(r"(\s|const|noexcept(\([^)]*\))?|override|final|mutable|&|->[^{]*)*",
                        rest) is not None


def functions(text):
    """(first line, last line, name) of each function body outside other function bodies."""
    code = blank_literals(text)
    result, stack, head_start = [], [], 0
    for index, char in enumerate(code):
        if char == "{":
            in_function = any(kind == "function" for kind, _, _ in stack)
            head = code[head_start:index]
            kind = "block"
            if not in_function and is_function_head(head):
                kind = "function"
            stack.append((kind, index, head.strip().split("(")[0].split()[-1:] or ["?"]))
            head_start = index + 1
        elif char == "}":
            if stack:
                kind, start, name = stack.pop()
                if kind == "function":
                    first = code.count("\n", 0, start) + 1
                    last = code.count("\n", 0, index) + 1
                    result.append((first, last, name[0]))
            head_start = index + 1
        elif char == ";":
            head_start = index + 1
    return result


def main():
    source_dir = sys.argv[1] if len(sys.argv) > 1 else "."
    files = subprocess.run(["git", "-C", source_dir, "ls-files", "*.cc", "*.h"], check=True,
                           capture_output=True, text=True).stdout.split()
    problems = []
    for relative in files:
        path = os.path.join(source_dir, relative)
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        lines = text.count("\n")
        if lines > MAX_FILE_LINES and REASON not in "\n".join(text.splitlines()[:20]):
            problems.append(f"{relative}: {lines} lines, over {MAX_FILE_LINES}, and no "
                            f"'{REASON} …' comment in its first 20 lines")
        for first, last, name in functions(text):
            if last - first + 1 > MAX_FUNCTION_LINES:
                problems.append(f"{relative}:{first}: {name} is {last - first + 1} lines long, "
                                f"over {MAX_FUNCTION_LINES}")
    for problem in problems:
        print(problem)
    print(f"{len(files)} files checked, {len(problems)} over the limits")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
