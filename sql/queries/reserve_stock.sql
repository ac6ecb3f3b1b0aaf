-- Inventory reserves stock for a new order: all lines or none, in one transaction.
--   psql -v user_id=1 -v items='[{"sku": "KB-01", "qty": 1}, {"sku": "MS-02", "qty": 2}]' \
--        -f sql/queries/reserve_stock.sql
-- Prints the new order's id. The reservation, the order, its lines and its OrderPlaced event (the
-- outbox of sql/01_schema.sql) commit together. When the user or a SKU is unknown, or a product is no
-- longer sold or short of stock, it says which on stderr, reserves nothing and exits 3. psql's \if
-- plays the application's part here; the SQL is what the application sends.

\set ON_ERROR_STOP on
-- The request, one row per SKU (the same SKU twice is one line with the quantities added up).
\set request '(SELECT sku, sum(qty)::integer AS qty FROM jsonb_to_recordset(' :'items' '::jsonb) AS x (sku text, qty integer) GROUP BY sku)'

BEGIN;

-- 1. Lock the requested products' inventory rows (SELECT … FOR UPDATE) and check them. A concurrent
--    reservation of any of them waits here until this transaction ends, so what is checked stays
--    true until the commit. Locking in product id order lets two reservations of the same products
--    queue one behind the other instead of deadlocking.
WITH locked AS (
  SELECT r.qty, i.stock - i.reserved AS available
  FROM :request AS r
  JOIN public.products p ON p.sku = r.sku AND p.active
  JOIN public.inventory i ON i.product_id = p.id
  ORDER BY p.id
  FOR UPDATE OF i
)
SELECT EXISTS (SELECT 1 FROM public.users WHERE id = :'user_id') AS user_known,
       count(*) = (SELECT count(*) FROM :request AS r)
       AND coalesce(bool_and(qty > 0 AND qty <= available), false) AS stock_reservable
FROM locked \gset

\if :user_known
\else
  \set stock_reservable false
  \warn reserve_stock: there is no user with id :user_id
\endif

\if :stock_reservable
  -- 2. Reserve. The inventory CHECK (reserved <= stock) would refuse an oversell anyway.
  UPDATE public.inventory i SET reserved = i.reserved + r.qty
  FROM :request AS r JOIN public.products p ON p.sku = r.sku
  WHERE i.product_id = p.id;

  -- 3. The order, priced now and with the billing address as it is now, then its lines.
  INSERT INTO public.orders (user_id, status, total, billing_address)
  SELECT u.id, 'pending',
         (SELECT sum(r.qty * p.price) FROM :request AS r JOIN public.products p ON p.sku = r.sku),
         jsonb_build_object('line1', u.billing_line1, 'line2', u.billing_line2, 'city', u.billing_city,
                            'postal_code', u.billing_postal_code, 'region', u.billing_region,
                            'country', u.billing_country)
  FROM public.users u
  WHERE u.id = :'user_id'
  RETURNING id AS order_id \gset

  INSERT INTO public.order_items (order_id, line_no, product_id, quantity, unit_price)
  SELECT :'order_id', row_number() OVER (ORDER BY p.id), p.id, r.qty, p.price
  FROM :request AS r JOIN public.products p ON p.sku = r.sku;

  -- 4. The domain event, in the same transaction: `walstream run --outbox public.outbox` publishes it
  --    on walstream:events:order when, and only when, this commits. Its payload is what a stock,
  --    billing or e-mail service needs without knowing the tables (amounts as exact decimal strings,
  --    as in the row records). Deleted again at once: walstream publishes the insert and nothing for
  --    the delete, so the outbox stays empty.
  INSERT INTO public.outbox (aggregatetype, aggregateid, type, payload)
  SELECT 'order', o.id::text, 'OrderPlaced',
         jsonb_build_object(
           'order_id', o.id, 'user_id', o.user_id, 'currency', o.currency, 'total', o.total::text,
           'items', (SELECT jsonb_agg(jsonb_build_object('line_no', i.line_no, 'product_id', i.product_id,
                                                         'sku', p.sku, 'quantity', i.quantity,
                                                         'unit_price', i.unit_price::text) ORDER BY i.line_no)
                     FROM public.order_items i JOIN public.products p ON p.id = i.product_id
                     WHERE i.order_id = o.id))
  FROM public.orders o
  WHERE o.id = :'order_id'
  RETURNING id AS event_id \gset
  DELETE FROM public.outbox WHERE id = :'event_id';

  COMMIT;
  SELECT :'order_id' AS order_id;
\else
  ROLLBACK;
  SELECT coalesce(string_agg(format('%s %s', r.sku,
                                    CASE WHEN p.id IS NULL THEN 'is unknown'
                                         WHEN NOT p.active THEN 'is no longer sold'
                                         WHEN r.qty <= 0 THEN 'needs a positive quantity'
                                         ELSE format('has %s available, %s requested',
                                                     coalesce(i.stock - i.reserved, 0), r.qty) END),
                             '; ' ORDER BY r.sku),
                  CASE WHEN NOT EXISTS (SELECT 1 FROM :request AS r) THEN 'the order has no items' END) AS problems
  FROM :request AS r
  LEFT JOIN public.products p ON p.sku = r.sku
  LEFT JOIN public.inventory i ON i.product_id = p.id
  WHERE p.id IS NULL OR NOT p.active OR r.qty <= 0 OR r.qty > coalesce(i.stock - i.reserved, 0) \gset
  \if :{?problems}
    \warn reserve_stock: :problems
  \endif
  DO $$ BEGIN RAISE EXCEPTION 'reserve_stock: order refused, nothing reserved'; END $$;
\endif
