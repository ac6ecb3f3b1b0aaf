-- The least-privilege role walstream logs in as: it may replicate, and read the published tables
-- for the initial snapshot; nothing else. docs/privileges.md says which feature needs what.
--   psql -v ON_ERROR_STOP=1 -d store -v walstream_password='…' -f sql/02_roles.sql
-- Run it as a superuser (in PostgreSQL 15 only a superuser may give a role REPLICATION), in the
-- store's database, after sql/01_schema.sql. Without -v walstream_password the password is
-- 'walstream', for local use only (docker-compose.yml; the servers of scripts/ and of the tests
-- trust loopback logins). The password travels in the ALTER ROLE statement: keep log_statement
-- below 'ddl' while running this with a real one.
-- Safe to run again, and in several databases of one cluster: roles are cluster-wide, so the role
-- is created only when it is missing, and its attributes and its grants on the store's tables are
-- reset to exactly these on every run.

\if :{?walstream_password}
\else
  \set walstream_password walstream
\endif

SET client_min_messages = warning;

DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'walstream') THEN
    CREATE ROLE walstream;
  END IF;
END
$$;

-- LOGIN REPLICATION: connect, open replication connections, create and drop its slot.
-- Everything else explicitly off, so a re-run also takes back what someone added by hand.
ALTER ROLE walstream WITH LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS
  PASSWORD :'walstream_password';

-- CONNECT is granted to PUBLIC by default; granting it to walstream keeps walstream working when an
-- administrator revokes it from PUBLIC (recommended: REVOKE CONNECT ON DATABASE … FROM PUBLIC).
SELECT format('GRANT CONNECT ON DATABASE %I TO walstream', current_database()) \gexec

GRANT USAGE ON SCHEMA public TO walstream;

-- SELECT on the published tables only, for the initial snapshot's COPY. On users only the published
-- columns: the password hash stays out of walstream's reach, as it stays out of the publication.
REVOKE ALL ON public.users, public.products, public.inventory, public.orders, public.order_items,
  public.payments, public.outbox FROM walstream;
GRANT SELECT (id, email, name, marketing_opt_in, billing_line1, billing_line2, billing_city,
              billing_postal_code, billing_region, billing_country, created_at, updated_at)
  ON public.users TO walstream;
GRANT SELECT ON public.products, public.inventory, public.orders, public.order_items, public.payments
  TO walstream;
-- The outbox is published like the others, so it gets the same SELECT: `walstream run --outbox
-- public.outbox` never reads it (its events come from the WAL, and the snapshot skips it), but a
-- walstream started without --outbox streams it as an ordinary table and its snapshot copies it.
GRANT SELECT ON public.outbox TO walstream;

-- Not walstream's part: the application roles that write events need, on the outbox, INSERT, DELETE,
-- and SELECT on id (for INSERT … RETURNING id and DELETE … WHERE id = …, the insert-then-delete of
-- sql/queries/reserve_stock.sql); no sequence, the id is gen_random_uuid(). For a role `orders_app`:
--   GRANT USAGE ON SCHEMA public TO orders_app;
--   GRANT INSERT, DELETE, SELECT (id) ON public.outbox TO orders_app;
