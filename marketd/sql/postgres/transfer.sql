-- Named queries of `marketd migrate --to` (marketd.store.transfer): what the target database's
-- schema holds, read from the catalog so the copy follows whatever the migrations made.

-- name: transfer_columns
-- every column of every table in the current schema, in table order: its type as
-- format_type writes it, whether it is an enum, an identity column, or has a default
SELECT c.relname AS table_name, a.attname AS column_name,
       format_type(a.atttypid, a.atttypmod) AS column_type, t.typtype = 'e' AS is_enum,
       a.attidentity <> '' AS is_identity, a.atthasdef AS has_default,
       a.attnotnull AS not_null
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_type t ON t.oid = a.atttypid
WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND a.attnum > 0
  AND NOT a.attisdropped
ORDER BY c.relname, a.attnum;

-- name: transfer_foreign_keys
-- (table, table it references) of every foreign key in the current schema
SELECT c.relname AS table_name, r.relname AS references_table
FROM pg_constraint k
JOIN pg_class c ON c.oid = k.conrelid
JOIN pg_class r ON r.oid = k.confrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE k.contype = 'f' AND n.nspname = current_schema();

-- name: transfer_table_exists
SELECT to_regclass(quote_ident(current_schema()) || '.' || quote_ident(:name)) IS NOT NULL;

-- name: transfer_advance_sequence
-- the identity (or serial) sequence behind a column past the ids copied into it
SELECT setval(pg_get_serial_sequence(quote_ident(:table_name), :column_name), :value::bigint);
