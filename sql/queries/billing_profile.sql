-- Billing reads a customer's billing profile by id (for an invoice, a tax calculation).
--   psql -v user_id=1 -f sql/queries/billing_profile.sql
-- One row, or none when there is no such user. :'user_id' is sent as a quoted literal and cast by
-- PostgreSQL, so a value that is not a number is an error, never SQL.
SELECT id, name, email, billing_line1, billing_line2, billing_city, billing_postal_code, billing_region,
       billing_country
FROM public.users
WHERE id = :'user_id';
