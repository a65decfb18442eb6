# Sourced by the set-up scripts (tools/setup_env.sh,
# tools/run_tests_second_stack.sh): `have SPEC...` succeeds when every
# package is installed in $VENV, at the version a `NAME==VERSION` spec names
# (a local build suffix such as +cu130 ignored).
have() { "$VENV/bin/python" - "$@" <<'PYEOF'
import importlib.metadata as md, sys
for spec in sys.argv[1:]:
    name, _, ver = spec.partition('==')
    try:
        installed = md.version(name)
    except md.PackageNotFoundError:
        sys.exit(1)
    if ver and installed.split('+')[0] != ver:
        sys.exit(1)
PYEOF
}
