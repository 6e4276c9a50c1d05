-- The table prisma/schema.prisma maps, created with SQL: `prisma db push` and `migrate` need
-- Prisma's schema-engine binary, which the lab never downloads.
CREATE TABLE IF NOT EXISTS orders (
    id         serial PRIMARY KEY,
    customer   text NOT NULL,
    total      integer NOT NULL,
    created_at timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP
);
INSERT INTO orders (customer, total)
SELECT 'customer ' || g, g * 100 FROM generate_series(1, 20) AS g
WHERE NOT EXISTS (SELECT 1 FROM orders);
