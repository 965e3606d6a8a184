-- The shop database the examples read: customers, products and their orders. The quickstart
-- (scripts/quickstart.sh) loads it into its throwaway server; for another server:
--   createdb shop && psql -d shop -v ON_ERROR_STOP=1 -f examples/shop.sql
-- `pgflow validate --source <example>` then checks the example's tables and transforms.
CREATE TABLE customers (
  id bigserial PRIMARY KEY,
  name text NOT NULL,
  email text NOT NULL UNIQUE,
  phone text,
  birthdate date,
  notes text,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE products (
  id bigint PRIMARY KEY,
  name text NOT NULL,
  price numeric(10, 2),
  tags text[],
  attrs jsonb,
  sku text
);
CREATE TABLE orders (
  id bigserial PRIMARY KEY,
  customer bigint REFERENCES customers,
  product_id bigint REFERENCES products,
  quantity int,
  total numeric(10, 2),
  status text NOT NULL DEFAULT 'new',
  placed_at timestamptz DEFAULT now()
);
INSERT INTO customers (name, email, phone, birthdate, notes)
VALUES ('Ada Lovelace', 'ada@example.com', '+44 20 7946 0018', '1815-12-10', 'prefers email'),
       ('Alan Turing', 'alan@example.com', '+44 161 496 0754', '1912-06-23', null);
INSERT INTO products VALUES (10, 'stapler', 7.90, '{office}', '{"color": "red"}', 'ST-10'),
                            (11, 'lamp', 24.00, '{home}', null, 'LA-11');
