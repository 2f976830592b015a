import psycopg2


def test_pg_url_is_a_fresh_database(pg_url):
    conn = psycopg2.connect(pg_url)
    with conn.cursor() as cur:
        cur.execute("select current_database(), count(*) from pg_tables where schemaname = 'public'")
        db, tables = cur.fetchone()
    conn.close()
    assert db.startswith("qt_test_") and tables == 0


def test_settings_are_isolated(settings, tmp_path):
    assert settings.data_dir == tmp_path / "data"
    assert settings.storage_backend == "local"
