"""psycopg 3 through evshift: startup parameters, server-side binding, executemany pipelines,
COPY both ways, transactions, cancel. Usage: psycopg_through_proxy.py PROXY_URL STORE_URL.

Every effect is checked on the store directly. Prints "ok" and exits 0 on success.
"""

import sys
import threading
import time
import uuid

import psycopg
from psycopg import errors


def main(proxy_url: str, store_url: str) -> None:
    with psycopg.connect(proxy_url, autocommit=True) as conn, psycopg.connect(
        store_url, autocommit=True
    ) as direct:
        assert conn.info.parameter_status("server_version").startswith("15"), "server_version"
        assert conn.info.parameter_status("client_encoding") == "UTF8"
        assert conn.info.backend_pid != 0

        conn.execute("CREATE TABLE py (id uuid PRIMARY KEY, n int, doc jsonb)")
        ids = [uuid.uuid4() for _ in range(200)]
        with conn.cursor() as cur:
            # executemany runs in pipeline mode with libpq 14+.
            cur.executemany(
                "INSERT INTO py (id, n, doc) VALUES (%s, %s, %s::jsonb)",
                [(i, n, '{"k": %d}' % n) for n, i in enumerate(ids)],
            )
        assert direct.execute("SELECT count(*) FROM py").fetchone()[0] == 200

        # Binary results and server-side prepared statements.
        with conn.cursor(binary=True) as cur:
            for _ in range(6):  # prepare_threshold defaults to 5
                cur.execute("SELECT id, n FROM py WHERE n = %s", (7,))
                row = cur.fetchone()
                assert row == (ids[7], 7), row

        # COPY out and in.
        with conn.cursor() as cur:
            with cur.copy("COPY (SELECT id, n FROM py ORDER BY n) TO STDOUT") as copy:
                rows = list(copy.rows())
            assert len(rows) == 200
            cur.execute("CREATE TABLE py2 (id uuid, n int)")
            with cur.copy("COPY py2 (id, n) FROM STDIN") as copy:
                for i, n in rows:
                    copy.write_row((i, n))
        assert direct.execute("SELECT count(*) FROM py2").fetchone()[0] == 200

        # A failed transaction rolls back and the connection carries on.
        conn.autocommit = False
        try:
            with conn.transaction():
                conn.execute("INSERT INTO py (id, n) VALUES (%s, 1000)", (uuid.uuid4(),))
                conn.execute("INSERT INTO py (id, n) VALUES (%s, 1001)", (ids[0],))
            raise AssertionError("duplicate key expected")
        except errors.UniqueViolation as e:
            assert e.diag.constraint_name == "py_pkey"
        assert direct.execute("SELECT count(*) FROM py").fetchone()[0] == 200
        conn.autocommit = True

        # Cancel a running statement from another thread.
        def cancel_soon():
            deadline = time.time() + 20
            while time.time() < deadline:
                active = direct.execute(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE query LIKE 'SELECT pg_sleep(60)%' AND state = 'active'"
                ).fetchone()[0]
                if active:
                    conn.cancel()
                    return
                time.sleep(0.02)

        canceller = threading.Thread(target=cancel_soon)
        canceller.start()
        try:
            conn.execute("SELECT pg_sleep(60)")
            raise AssertionError("the sleep should have been cancelled")
        except errors.QueryCanceled:
            pass
        canceller.join()
        assert conn.execute("SELECT 1").fetchone() == (1,)
    print("ok")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
