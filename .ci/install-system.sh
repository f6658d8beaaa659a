#!/usr/bin/env bash
# Install the PostgreSQL pieces skyclass needs on Debian/Ubuntu:
#   server dev headers (PGXS), q3c, pg_cron, pgvector.
# pgvector: the binary package where the archive has one, else Debian's
# source package built with PGXS. With --with-browser also headless Chromium
# (the test suite renders the HTML report); with --with-vo the IVOA client
# tools (stilts, whose taplint validates the TAP service; it brings a Java
# runtime). Flags combine. Idempotent: a second run only checks.
set -euo pipefail

WITH_BROWSER=""
WITH_VO=""
for arg in "$@"; do
    case "$arg" in
        --with-browser) WITH_BROWSER=1 ;;
        --with-vo) WITH_VO=1 ;;
        *) echo "error: unknown option $arg (known: --with-browser, --with-vo)" >&2; exit 2 ;;
    esac
done

PG_MAJOR="${PG_MAJOR:-15}"
PG_CONFIG="${PG_CONFIG:-/usr/lib/postgresql/${PG_MAJOR}/bin/pg_config}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

have_ext() { [ -f "$("$PG_CONFIG" --sharedir)/extension/$1.control" ]; }
have_pgxs() { [ -f "$("$PG_CONFIG" --pgxs 2>/dev/null)" ]; }

if [ ! -x "$PG_CONFIG" ]; then
    echo "error: PostgreSQL ${PG_MAJOR} server binaries not found ($PG_CONFIG)." >&2
    echo "       install them with: apt-get install postgresql-${PG_MAJOR}" >&2
    exit 1
fi

have_browser() { [ -z "$WITH_BROWSER" ] || [ -x /usr/bin/chromium ]; }
have_vo() { [ -z "$WITH_VO" ] || { command -v stilts >/dev/null && command -v java >/dev/null; }; }

if have_pgxs && have_ext q3c && have_ext pg_cron && have_ext vector && have_browser && have_vo; then
    echo "system: PostgreSQL ${PG_MAJOR} with q3c, pg_cron, pgvector and PGXS already installed"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
APT_UPDATED=""
apt_update() {
    if [ -z "$APT_UPDATED" ]; then $SUDO apt-get update -qq; APT_UPDATED=1; fi
}

apt_update
$SUDO apt-get install -y -qq --no-install-recommends \
    "postgresql-server-dev-${PG_MAJOR}" "postgresql-${PG_MAJOR}-q3c" "postgresql-${PG_MAJOR}-cron" \
    make gcc >/dev/null

if ! have_browser; then
    $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core >/dev/null
fi

if ! have_vo; then
    $SUDO apt-get install -y -qq --no-install-recommends stilts default-jre-headless >/dev/null
    have_vo || { echo "error: stilts (taplint) did not install" >&2; exit 1; }
fi

if ! have_ext vector; then
    if apt-cache show "postgresql-${PG_MAJOR}-pgvector" >/dev/null 2>&1; then
        $SUDO apt-get install -y -qq --no-install-recommends "postgresql-${PG_MAJOR}-pgvector" >/dev/null
    else
        # No binary package for this server version (Debian 12 + PostgreSQL 15):
        # build Debian's pgvector source package with PGXS.
        SRC_LIST=/etc/apt/sources.list.d/skyclass-pgvector-src.sources
        if [ ! -f "$SRC_LIST" ]; then
            # The mirror of the existing Debian entry (deb822 "URIs:" or one-line "deb" form).
            MIRROR="$( { grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}';
                         grep -hE '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}'; } \
                       | grep -E '/debian/?$' | head -n1 || true)"
            MIRROR="${MIRROR:-http://deb.debian.org/debian}"
            printf 'Types: deb-src\nURIs: %s\nSuites: trixie\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
                "$MIRROR" | $SUDO tee "$SRC_LIST" >/dev/null
            APT_UPDATED=""
            apt_update
        fi
        BUILD_DIR="$(mktemp -d)"
        (
            cd "$BUILD_DIR"
            apt-get source --download-only pgvector >/dev/null
            tar xf pgvector_*.orig.tar.* 
            cd pgvector-*/
            make -s PG_CONFIG="$PG_CONFIG" OPTFLAGS="" >/dev/null
            $SUDO make -s install PG_CONFIG="$PG_CONFIG" >/dev/null
        )
        rm -rf "$BUILD_DIR"
    fi
fi

for ext in q3c pg_cron vector; do
    have_ext "$ext" || { echo "error: extension $ext did not install" >&2; exit 1; }
done
echo "system: installed PostgreSQL ${PG_MAJOR} dev headers, q3c, pg_cron, pgvector"
