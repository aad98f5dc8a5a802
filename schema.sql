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

-- An order as the API answers it, and the rest of the service's SQL.
-- Each statement the service sends is one unit of work. The point reads
-- and the changes are PL/pgSQL functions, whose statements' plans each
-- connection keeps rather than planning them on every call: a cache, not
-- session state, so it holds behind PgBouncer in transaction pooling
-- mode, where a PREPARE would not. Lists are planned per call instead
-- (orders.LIST_ORDERS): one plan kept for every customer would guess
-- each customer's share of the table, and a wrong guess pages through
-- everyone's orders to find a new customer's few.
--
-- CREATE OR REPLACE changes a function's body, never the names and
-- types of its arguments or its result, and adds a view's columns only
-- at the end. A new signature needs a function of a new name, kept
-- beside the old one until no running pod calls it, for a later release
-- to drop. A view holds no rows: a changed one may be dropped and made
-- again in one apply, as long as it keeps the columns running pods read.

-- A time as the API writes it: UTC, microseconds, a trailing Z.
CREATE OR REPLACE FUNCTION utc_text(moment TIMESTAMPTZ) RETURNS TEXT
LANGUAGE sql STABLE AS $$
    SELECT to_char(moment AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;

-- An order as the API answers it, given its products as JSON.
CREATE OR REPLACE FUNCTION order_json(o orders, products JSON) RETURNS TEXT
LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'id', o.id,
        'user', o.owner,
        'products', products,
        'order_date', utc_text(o.created_at),
        'updated_at', utc_text(o.updated_at),
        'status', o.status,
        'fulfilled', o.status = 'fulfilled'
    )::text
$$;

-- A stored order's products, in the order the customer listed them.
CREATE OR REPLACE FUNCTION order_products_json(customer UUID, order_number BIGINT)
RETURNS JSON LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (
        SELECT json_agg(json_build_object('uuid', p.product_uuid,
                                          'quantity', p.quantity)
                        ORDER BY p.line_no)
        FROM order_products p
        WHERE p.owner = customer AND p.order_id = order_number
    );
END
$$;

-- Every order with its answer and its place in a list (the cursor's
-- text). Each answer is built only for the rows a query returns. The
-- products are a subquery here, not order_products_json: planned with
-- the query, a page of 20 costs less than 20 calls of a function.
CREATE OR REPLACE VIEW order_answers AS
SELECT o.owner, o.id, o.status, o.created_at, o.idempotency_key,
       o.request_digest,
       order_json(o, (
           SELECT json_agg(json_build_object('uuid', p.product_uuid,
                                             'quantity', p.quantity)
                           ORDER BY p.line_no)
           FROM order_products p
           WHERE p.owner = o.owner AND p.order_id = o.id
       )) AS order_body,
       utc_text(o.created_at) || ' ' || o.id AS list_position
FROM orders o;

-- Places an order with its products, unless the customer's retry key
-- names an order already placed: then it answers no row.
CREATE OR REPLACE FUNCTION place_order(
    customer UUID, retry_key TEXT, digest TEXT, product_uuids UUID[],
    quantities INTEGER[]
) RETURNS TABLE (order_number BIGINT, order_body TEXT)
LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY
    WITH new_order AS (
        INSERT INTO orders AS o (owner, idempotency_key, request_digest)
        VALUES (customer, retry_key, digest)
        ON CONFLICT (owner, idempotency_key) DO NOTHING
        RETURNING o
    ), new_lines AS (
        INSERT INTO order_products (owner, order_id, line_no, product_uuid, quantity)
        SELECT (n.o).owner, (n.o).id, line.line_no, line.product_uuid, line.quantity
        FROM new_order n,
             unnest(product_uuids, quantities)
                 WITH ORDINALITY AS line (product_uuid, quantity, line_no)
        RETURNING line_no, product_uuid, quantity
    )
    SELECT (n.o).id, order_json(n.o, (
        SELECT json_agg(json_build_object('uuid', p.product_uuid,
                                          'quantity', p.quantity)
                        ORDER BY p.line_no)
        FROM new_lines p))
    FROM new_order n;
END
$$;

-- The customer's order placed with this retry key, and the digest of
-- the body it was placed with.
CREATE OR REPLACE FUNCTION find_retried_order(customer UUID, retry_key TEXT)
RETURNS TABLE (request_digest TEXT, order_number BIGINT, order_body TEXT)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN QUERY
    SELECT o.request_digest, o.id, o.order_body
    FROM order_answers o
    WHERE o.owner = customer AND o.idempotency_key = retry_key;
END
$$;

-- One of the customer's orders, by its number.
CREATE OR REPLACE FUNCTION find_own_order(customer UUID, order_number BIGINT)
RETURNS TABLE (order_status TEXT, order_body TEXT)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN QUERY
    SELECT o.status, o.order_body
    FROM order_answers o
    WHERE o.owner = customer AND o.id = order_number;
END
$$;

-- Staff only: any customer's order, by its number alone.
CREATE OR REPLACE FUNCTION find_any_order(order_number BIGINT)
RETURNS TABLE (order_status TEXT, order_body TEXT)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN QUERY
    SELECT o.status, o.order_body
    FROM order_answers o
    WHERE o.id = order_number;
END
$$;

-- Cancels one of the customer's orders if it is still placed, in one
-- conditional statement, so that of two concurrent changes one wins.
-- Answers no row when the order is not the customer's or not placed.
CREATE OR REPLACE FUNCTION cancel_own_order(customer UUID, order_number BIGINT)
RETURNS TABLE (order_body TEXT)
LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY
    UPDATE orders AS o SET status = 'cancelled', updated_at = now()
    WHERE o.owner = customer AND o.id = order_number AND o.status = 'placed'
    RETURNING order_json(o, order_products_json(o.owner, o.id));
END
$$;

-- Staff only: fulfils any customer's order if it is still placed.
CREATE OR REPLACE FUNCTION fulfil_any_order(order_number BIGINT)
RETURNS TABLE (order_body TEXT)
LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY
    UPDATE orders AS o SET status = 'fulfilled', updated_at = now()
    WHERE o.id = order_number AND o.status = 'placed'
    RETURNING order_json(o, order_products_json(o.owner, o.id));
END
$$;
