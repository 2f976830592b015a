#!/bin/sh
# Entry point of the qt_pipeline image. Secrets are never baked into the image: every variable VAR may be
# given as VAR_FILE=/run/secrets/... (Compose/Kubernetes secret files) and is exported from that file's
# content here, e.g. NEON_DATABASE_URL_FILE, NEON_DIRECT_URL_FILE, NEON_API_KEY_FILE, DAGSTER_PG_PASSWORD_FILE,
# QT_ALERT_WEBHOOK_URL_FILE (a webhook URL carries its token).
# Then the command runs as PID 1 (exec), so stop signals reach it.
set -eu
for var in NEON_DATABASE_URL NEON_DIRECT_URL NEON_API_KEY DAGSTER_PG_PASSWORD QT_BOOTSTRAP_ADMIN_URL QT_ALERT_WEBHOOK_URL; do
    file_var="${var}_FILE"
    eval "file=\${${file_var}:-}"
    if [ -n "${file}" ]; then
        if [ ! -r "${file}" ]; then
            echo "qt-entrypoint: ${file_var}=${file} is not a readable file; mount the secret or unset ${file_var}" >&2
            exit 64
        fi
        eval "${var}=\$(cat \"\${file}\")"
        export "${var?}"
        unset "${file_var}"
    fi
done
exec "$@"
