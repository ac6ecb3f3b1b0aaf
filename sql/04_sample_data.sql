-- A few rows to look at: three customers, four products with stock, and one paid order with two
-- lines, its stock reservation and its payment.
--   psql -v ON_ERROR_STOP=1 -d store -f sql/04_sample_data.sql
-- Loads only into an empty store (no users yet), so running it again changes nothing.
-- The password hashes are placeholders in PHC format, not hashes of any password.

SELECT NOT EXISTS (SELECT 1 FROM public.users) AS store_is_empty \gset
\if :store_is_empty

BEGIN;

INSERT INTO public.users (email, name, password_hash, marketing_opt_in, billing_line1, billing_city,
                          billing_postal_code, billing_region, billing_country)
VALUES
  ('ada@example.com', 'Ada Lovelace',
   '$argon2id$v=19$m=65536,t=3,p=4$c2FtcGxlLXNhbHQtYWRh$placeholderplaceholderplaceholderplaceholde',
   true, '12 St James''s Square', 'London', 'SW1Y 4JH', NULL, 'GB'),
  ('grace@example.com', 'Grace Hopper',
   '$argon2id$v=19$m=65536,t=3,p=4$c2FtcGxlLXNhbHQtZ3Jh$placeholderplaceholderplaceholderplaceholde',
   false, '1 Navy Yard', 'Arlington', '22202', 'VA', 'US'),
  ('linus@example.com', 'Linus Torvalds', NULL, false, 'Mannerheimintie 1', 'Helsinki', '00100', NULL, 'FI');

INSERT INTO public.products (sku, name, description, price, attributes)
VALUES
  ('KB-01', 'Mechanical keyboard', 'Tenkeyless, brown switches', 89.90, '{"layout": "ISO", "switch": "brown"}'),
  ('MS-02', 'Wireless mouse', 'Three buttons, USB-C charging', 29.50, '{"colour": "graphite"}'),
  ('MN-27', '27" monitor', '2560x1440, 75 Hz', 249.00, '{"size_in": 27, "ports": ["HDMI", "DP"]}'),
  ('CB-USB', 'USB-C cable', '1 m, braided', 9.99, '{"length_m": 1}');

INSERT INTO public.inventory (product_id, stock, reserved)
SELECT id, s.stock, 0
FROM public.products
JOIN (VALUES ('KB-01', 25), ('MS-02', 40), ('MN-27', 8), ('CB-USB', 200)) AS s (sku, stock) USING (sku);

-- Ada's order: one keyboard and two cables, paid by card, reserved until it ships.
WITH ada AS (
  SELECT id, jsonb_build_object('line1', billing_line1, 'line2', billing_line2, 'city', billing_city,
                                'postal_code', billing_postal_code, 'region', billing_region,
                                'country', billing_country) AS address
  FROM public.users WHERE email = 'ada@example.com'
), lines (line_no, sku, quantity) AS (
  VALUES (1, 'KB-01', 1), (2, 'CB-USB', 2)
), priced AS (
  SELECT l.line_no, p.id AS product_id, l.quantity, p.price AS unit_price
  FROM lines l JOIN public.products p USING (sku)
), new_order AS (
  INSERT INTO public.orders (user_id, status, total, billing_address)
  SELECT ada.id, 'paid', (SELECT sum(quantity * unit_price) FROM priced), ada.address FROM ada
  RETURNING id, total, currency
), new_items AS (
  INSERT INTO public.order_items (order_id, line_no, product_id, quantity, unit_price)
  SELECT new_order.id, priced.line_no, priced.product_id, priced.quantity, priced.unit_price
  FROM new_order, priced
), reservation AS (
  UPDATE public.inventory i SET reserved = i.reserved + priced.quantity
  FROM priced WHERE i.product_id = priced.product_id
)
INSERT INTO public.payments (order_id, status, amount, currency, provider, provider_ref, details)
SELECT id, 'captured', total, currency, 'card', 'ch_sample_0001', '{"brand": "visa", "last4": "4242"}'
FROM new_order;

COMMIT;

\endif
