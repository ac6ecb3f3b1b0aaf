-- Authentication looks a customer up by the email they typed, to verify their password against
-- the stored hash (in the application, never in SQL).
--   psql -v email=Ada@Example.com -f sql/queries/auth_lookup.sql
-- Emails are stored lower-case (sql/01_schema.sql), so the lookup lower-cases its input and is
-- served by the unique index users_email_key. One row, or none for an unknown email.
SELECT id, email, name, password_hash
FROM public.users
WHERE email = lower(:'email');
