# shellcheck shell=bash
# Sourced by scripts/*.sh: how to run the Rust toolchain (cargo, rustup).
#
# With cargo on PATH (CI as root, or a developer as themselves): directly.
# Under sudo, where sudo resets PATH and root usually has no toolchain of its
# own: as the user who ran sudo, with their rustup, so that target/ and
# ~/.cargo stay owned by them. Defines:
#   rust CMD...        run CMD with the toolchain (as the right user)
#   TOOLCHAIN_USER     that user's name when it is not the caller, else empty

TOOLCHAIN_USER=
if command -v cargo >/dev/null 2>&1; then
    rust() { "$@"; }
elif [ "$(id -u)" -eq 0 ] && [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then
    TOOLCHAIN_USER=$SUDO_USER
    TOOLCHAIN_HOME=$(getent passwd "$SUDO_USER" | cut -d: -f6)
    rust() {
        runuser -u "$TOOLCHAIN_USER" -- \
            env HOME="$TOOLCHAIN_HOME" PATH="$TOOLCHAIN_HOME/.cargo/bin:$PATH" "$@"
    }
    if ! rust cargo --version >/dev/null 2>&1; then
        echo "$0: cargo is on neither root's PATH nor $SUDO_USER's (~/.cargo/bin): install Rust with rustup (https://rustup.rs)" >&2
        exit 1
    fi
    echo "$0: using $SUDO_USER's Rust toolchain (root has none on its PATH); builds run as $SUDO_USER"
else
    echo "$0: cargo not found: install Rust with rustup (https://rustup.rs)" >&2
    exit 1
fi
