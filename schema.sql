-- The orders service's tables. Safe to apply again to a database that
-- already holds orders: nothing here drops, truncates or rewrites rows.
--
-- Every table carries the owner (the customer's user uuid) and every key
-- starts with it, so the tables can be distributed by owner on a sharded
-- PostgreSQL with each customer's orders on one shard.

CREATE TABLE IF NOT EXISTS orders (
    owner UUID NOT NULL,
    id BIGINT GENERATED ALWAYS AS IDENTITY,
    status TEXT NOT NULL DEFAULT 'placed'
        CHECK (status IN ('placed', 'fulfilled', 'cancelled')),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- A client's retry key, with a digest of the body it first came with.
    idempotency_key TEXT
        CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    request_digest TEXT,
    PRIMARY KEY (owner, id),
    UNIQUE (owner, idempotency_key),
    CHECK ((idempotency_key IS NULL) = (request_digest IS NULL)),
    CHECK (updated_at >= created_at)
);

-- "This customer's orders, newest first", and the keyset pages after it.
CREATE INDEX IF NOT EXISTS orders_owner_newest
    ON orders (owner, created_at DESC, id DESC);

-- Staff look orders up by number alone and page through every order.
CREATE INDEX IF NOT EXISTS orders_id ON orders (id);
CREATE INDEX IF NOT EXISTS orders_newest ON orders (created_at DESC, id DESC);

CREATE TABLE IF NOT EXISTS order_products (
    owner UUID NOT NULL,
    order_id BIGINT NOT NULL,
    line_no SMALLINT NOT NULL CHECK (line_no >= 1),
    product_uuid UUID NOT NULL,
    quantity INTEGER NOT NULL CHECK (quantity BETWEEN 1 AND 1000),
    PRIMARY KEY (owner, order_id, line_no),
    UNIQUE (owner, order_id, product_uuid),
    FOREIGN KEY (owner, order_id) REFERENCES orders (owner, id)
);
