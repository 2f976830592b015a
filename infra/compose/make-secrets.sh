#!/usr/bin/env sh
# Creates the secret files infra/compose.yaml mounts (random passwords; files are git-ignored, mode 600).
# Existing files are kept, so re-running is safe. For Neon, overwrite neon_database_url.txt (pooled host,
# writer role) and neon_direct_url.txt (direct host, owner role) with the URLs of your project.
set -eu
cd "$(dirname "$0")"
umask 077
mkdir -p secrets
rand() { python3 -c 'import secrets; print(secrets.token_urlsafe(24))'; }
put() { [ -s "secrets/$1.txt" ] || printf '%s' "$2" >"secrets/$1.txt"; }
for f in postgres_password dagster_pg_password qt_owner_password qt_writer_password qt_reader_password ray_auth_token; do
    put "$f" "$(rand)"
done
r() { cat "secrets/$1.txt"; }
put postgres_admin_url "postgresql://postgres:$(r postgres_password)@postgres:5432/postgres"
put neon_database_url "postgresql://qt_writer:$(r qt_writer_password)@postgres:5432/qt"
put neon_direct_url "postgresql://qt_owner:$(r qt_owner_password)@postgres:5432/qt"
echo "secrets in $(pwd)/secrets (never commit them)"
