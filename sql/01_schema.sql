-- The shared store: one PostgreSQL database that billing, authentication, marketing, inventory and
-- ordering all query with SQL, and that walstream turns into change streams.
--   psql -v ON_ERROR_STOP=1 -d store -f sql/01_schema.sql      (as an administrator, e.g. postgres)
-- Safe to run again: every object is created only when it is missing.
--
-- Replica identity decides what PostgreSQL writes to the WAL about the old row of an UPDATE or
-- DELETE, and so what walstream can put in a record's `before`:
--   DEFAULT  the primary-key columns only (and for an UPDATE only when the key changed): enough for a
--            subscriber that keeps the latest row per key.
--   FULL     the whole old row: for subscribers that react to a transition (status pending -> paid,
--            reserved 2 -> 5). It costs WAL: every UPDATE and DELETE logs the old row as well.
-- Every table has a primary key, so none is left without an identity (PostgreSQL would reject
-- UPDATE and DELETE on a published table that has none).

SET client_min_messages = warning;  -- no NOTICE for each "already exists, skipping"

DO $$
BEGIN
  IF to_regtype('public.order_status') IS NULL THEN
    CREATE TYPE public.order_status AS ENUM ('pending', 'paid', 'shipped', 'delivered', 'cancelled');
  END IF;
  IF to_regtype('public.payment_status') IS NULL THEN
    CREATE TYPE public.payment_status AS ENUM ('authorized', 'captured', 'failed', 'refunded');
  END IF;
END
$$;

-- updated_at follows every change without each service having to remember it.
CREATE OR REPLACE FUNCTION public.touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  NEW.updated_at := now();
  RETURN NEW;
END
$$;

-- One row per customer: the single profile billing (name, billing address), authentication
-- (email, password hash) and marketing (opt-in) all read, instead of three copies drifting apart.
-- Emails are stored lower-case so that the UNIQUE constraint is case-insensitive and lookups use it.
-- Replica identity DEFAULT: subscribers key their caches by id. FULL is not an option here: the
-- publication leaves password_hash out (sql/03_publication.sql), and PostgreSQL requires a
-- publication's column list to cover the replica identity, which with FULL is every column.
CREATE TABLE IF NOT EXISTS public.users (
  id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  email               text NOT NULL,
  name                text NOT NULL,
  password_hash       text,  -- PHC string (argon2id, bcrypt); NULL: no password set, password login refused
  marketing_opt_in    boolean NOT NULL DEFAULT false,
  billing_line1       text,
  billing_line2       text,
  billing_city        text,
  billing_postal_code text,
  billing_region      text,
  billing_country     text,  -- ISO 3166-1 alpha-2
  created_at          timestamptz NOT NULL DEFAULT now(),
  updated_at          timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT users_email_key UNIQUE (email),
  CONSTRAINT users_email_lower CHECK (email = lower(email) AND position('@' IN email) > 1),
  CONSTRAINT users_billing_country_iso CHECK (billing_country ~ '^[A-Z]{2}$')
);
ALTER TABLE public.users REPLICA IDENTITY DEFAULT;

-- Replica identity DEFAULT: catalogue subscribers (search index, price cache) need the new row and
-- the key of a deleted product, nothing of the old row.
CREATE TABLE IF NOT EXISTS public.products (
  id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  sku         text NOT NULL,
  name        text NOT NULL,
  description text NOT NULL DEFAULT '',
  price       numeric(12, 2) NOT NULL,  -- in the store's currency (orders.currency)
  attributes  jsonb NOT NULL DEFAULT '{}',  -- free-form: colour, size, weight, …
  active      boolean NOT NULL DEFAULT true,  -- false: no longer sold; kept for past orders
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT products_sku_key UNIQUE (sku),
  CONSTRAINT products_price_nonnegative CHECK (price >= 0),
  CONSTRAINT products_attributes_object CHECK (jsonb_typeof(attributes) = 'object')
);
ALTER TABLE public.products REPLICA IDENTITY DEFAULT;

-- Stock per product: `stock` units on the shelf, `reserved` of them promised to orders not shipped
-- yet; available = stock - reserved. Reservations lock the row (sql/queries/reserve_stock.sql) and
-- the CHECKs make overselling impossible even for a writer that forgets to.
-- Replica identity FULL: stock-level subscribers (low-stock alerts, the storefront's availability
-- cache) want the change, reserved 2 -> 5, and not only the new value; the row is a few bytes.
CREATE TABLE IF NOT EXISTS public.inventory (
  product_id bigint PRIMARY KEY REFERENCES public.products (id) ON DELETE CASCADE,
  stock      integer NOT NULL DEFAULT 0,
  reserved   integer NOT NULL DEFAULT 0,
  updated_at timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT inventory_stock_nonnegative CHECK (stock >= 0),
  CONSTRAINT inventory_reserved_nonnegative CHECK (reserved >= 0),
  CONSTRAINT inventory_reserved_within_stock CHECK (reserved <= stock)
);
ALTER TABLE public.inventory REPLICA IDENTITY FULL;

-- Replica identity FULL: fulfilment, e-mail notifications and analytics act on status transitions
-- (pending -> paid, paid -> cancelled), which needs the old status in `before`.
CREATE TABLE IF NOT EXISTS public.orders (
  id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  user_id         bigint NOT NULL REFERENCES public.users (id),
  status          public.order_status NOT NULL DEFAULT 'pending',
  currency        text NOT NULL DEFAULT 'EUR',  -- ISO 4217
  total           numeric(12, 2) NOT NULL,
  -- The billing address as it was when the order was placed: a later profile edit must not
  -- rewrite a past invoice.
  billing_address jsonb NOT NULL DEFAULT '{}',
  placed_at       timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT orders_currency_iso CHECK (currency ~ '^[A-Z]{3}$'),
  CONSTRAINT orders_total_nonnegative CHECK (total >= 0)
);
CREATE INDEX IF NOT EXISTS orders_user_id_idx ON public.orders (user_id);
ALTER TABLE public.orders REPLICA IDENTITY FULL;

-- Replica identity DEFAULT: lines are written once with their order and deleted only with it; the
-- key (order_id, line_no) identifies a deleted line.
CREATE TABLE IF NOT EXISTS public.order_items (
  order_id   bigint NOT NULL REFERENCES public.orders (id) ON DELETE CASCADE,
  line_no    integer NOT NULL,
  product_id bigint NOT NULL REFERENCES public.products (id),
  quantity   integer NOT NULL,
  unit_price numeric(12, 2) NOT NULL,  -- the price when ordered, not today's
  PRIMARY KEY (order_id, line_no),
  CONSTRAINT order_items_line_positive CHECK (line_no > 0),
  CONSTRAINT order_items_quantity_positive CHECK (quantity > 0),
  CONSTRAINT order_items_unit_price_nonnegative CHECK (unit_price >= 0)
);
CREATE INDEX IF NOT EXISTS order_items_product_id_idx ON public.order_items (product_id);
ALTER TABLE public.order_items REPLICA IDENTITY DEFAULT;

-- Replica identity FULL: accounting reconciles transitions (authorized -> captured -> refunded)
-- and wants the amount and provider reference of the old row with each of them.
CREATE TABLE IF NOT EXISTS public.payments (
  id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  order_id     bigint NOT NULL REFERENCES public.orders (id),
  status       public.payment_status NOT NULL DEFAULT 'authorized',
  amount       numeric(12, 2) NOT NULL,
  currency     text NOT NULL,
  provider     text NOT NULL,  -- 'card', 'paypal', 'invoice', …
  provider_ref text,           -- the provider's id for the payment
  details      jsonb NOT NULL DEFAULT '{}',  -- what the provider answered, for support and audits
  created_at   timestamptz NOT NULL DEFAULT now(),
  updated_at   timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT payments_provider_ref_key UNIQUE (provider, provider_ref),
  CONSTRAINT payments_amount_positive CHECK (amount > 0),
  CONSTRAINT payments_currency_iso CHECK (currency ~ '^[A-Z]{3}$')
);
CREATE INDEX IF NOT EXISTS payments_order_id_idx ON public.payments (order_id);
ALTER TABLE public.payments REPLICA IDENTITY FULL;

-- The transactional outbox: a service records the domain event its change means ("order 42 was
-- placed") in the same transaction as the change, and `walstream run --outbox public.outbox` turns each
-- INSERT into one entry on walstream:events:<aggregatetype> (docs/design.md, the event contract):
-- published exactly when the transaction commits, never without it, never twice. The column names are
-- Debezium's outbox names, walstream's defaults; created_at, like any further column, becomes a field of
-- the event. Writers insert the event and delete it again in the same transaction
-- (sql/queries/reserve_stock.sql): walstream publishes the insert and ignores the delete, so the table
-- stays empty and needs no clean-up. The CHECK refuses what walstream would route to events:_invalid
-- (an aggregate type that is empty, contains white space or is _invalid), at the writer, where it can be
-- fixed.
-- Replica identity DEFAULT: the primary key is all a delete needs; walstream publishes nothing for it.
CREATE TABLE IF NOT EXISTS public.outbox (
  id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),  -- the event's id, for consumers' dedupe
  aggregatetype text NOT NULL,   -- the events stream walstream:events:<aggregatetype>, e.g. 'order'
  aggregateid   text NOT NULL,   -- which aggregate, e.g. the order id
  type          text NOT NULL,   -- the event, e.g. 'OrderPlaced'
  payload       jsonb NOT NULL,  -- the event's data: the entry's `payload` is this JSON document
  created_at    timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT outbox_aggregatetype_name CHECK (aggregatetype ~ '^[^[:space:]]+$' AND aggregatetype <> '_invalid')
);
ALTER TABLE public.outbox REPLICA IDENTITY DEFAULT;

CREATE OR REPLACE TRIGGER users_touch BEFORE UPDATE ON public.users
  FOR EACH ROW EXECUTE FUNCTION public.touch_updated_at();
CREATE OR REPLACE TRIGGER products_touch BEFORE UPDATE ON public.products
  FOR EACH ROW EXECUTE FUNCTION public.touch_updated_at();
CREATE OR REPLACE TRIGGER inventory_touch BEFORE UPDATE ON public.inventory
  FOR EACH ROW EXECUTE FUNCTION public.touch_updated_at();
CREATE OR REPLACE TRIGGER orders_touch BEFORE UPDATE ON public.orders
  FOR EACH ROW EXECUTE FUNCTION public.touch_updated_at();
CREATE OR REPLACE TRIGGER payments_touch BEFORE UPDATE ON public.payments
  FOR EACH ROW EXECUTE FUNCTION public.touch_updated_at();
