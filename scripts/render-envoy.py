#!/usr/bin/env python3
"""Renders an Envoy template: replaces @NAME@ placeholders with values given as NAME=VALUE
arguments; NAME=@file reads the value from a file. Fails on any placeholder left unfilled,
so a renamed placeholder cannot silently produce a broken config."""
import re
import sys


def main(argv):
    if len(argv) < 3:
        sys.exit("usage: render-envoy.py TEMPLATE OUTPUT NAME=VALUE|NAME=@FILE ...")
    template, output, pairs = argv[0], argv[1], argv[2:]
    text = open(template, encoding="utf-8").read()
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            sys.exit(f"render-envoy.py: `{pair}` is not NAME=VALUE")
        if value.startswith("@"):
            value = open(value[1:], encoding="utf-8").read().rstrip("\n")
        text = text.replace(f"@{name}@", value)
    left = sorted(set(re.findall(r"@([A-Z_]+)@", text)))
    if left:
        sys.exit(f"render-envoy.py: {template}: no value for {', '.join(left)}")
    with open(output, "w", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    main(sys.argv[1:])
