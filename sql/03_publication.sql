-- The publication walstream streams: the store's tables, created by an administrator so that the
-- walstream role needs no superuser (FOR ALL TABLES would) and owns no table (FOR TABLE would).
-- walstream finds it at start (--publication walstream, the default) and uses it as it is.
--   psql -v ON_ERROR_STOP=1 -d store -f sql/03_publication.sql     (as the tables' owner, e.g. postgres)
-- Safe to run again: an existing publication is reset to exactly this table list, so a re-run after
-- an edit here is how tables are added or removed. One that publishes all tables (walstream creates
-- it so when it finds none) is replaced.
--
-- users is published without password_hash: the hash is for authentication's SQL lookups only and
-- must not be copied to Redis. Its replica identity is the primary key, which the column list
-- covers, as PostgreSQL requires of a publication that publishes UPDATE and DELETE.
-- The outbox is published for its inserts: `walstream run --outbox public.outbox` publishes each as an
-- event on walstream:events:<aggregatetype>, and publishes nothing for its updates, deletes and truncates,
-- nor a row stream of its own. Without --outbox walstream would stream it as an ordinary table.
-- Publication parameters are the defaults: insert, update, delete and truncate.

DO $$
DECLARE
  tables constant text :=
    'public.users (id, email, name, marketing_opt_in, billing_line1, billing_line2, billing_city, '
    '              billing_postal_code, billing_region, billing_country, created_at, updated_at), '
    'public.products, public.inventory, public.orders, public.order_items, public.payments, public.outbox';
  pub pg_publication;
BEGIN
  SELECT * INTO pub FROM pg_publication WHERE pubname = 'walstream';
  IF pub.oid IS NOT NULL
     AND (pub.puballtables OR EXISTS (SELECT 1 FROM pg_publication_namespace WHERE pnpubid = pub.oid)) THEN
    -- FOR ALL TABLES (what walstream creates when it finds no publication) or FOR TABLES IN SCHEMA:
    -- no table list to set, so replace it, in this one transaction; a running walstream goes on
    -- streaming under the new definition.
    DROP PUBLICATION walstream;
    pub := NULL;
  END IF;
  IF pub.oid IS NOT NULL THEN
    EXECUTE 'ALTER PUBLICATION walstream SET TABLE ' || tables;
  ELSE
    EXECUTE 'CREATE PUBLICATION walstream FOR TABLE ' || tables;
  END IF;
END
$$;
