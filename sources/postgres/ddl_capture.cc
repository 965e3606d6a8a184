#include "sources/postgres/ddl_capture.h"

#include "absl/strings/str_cat.h"

namespace pgflow {
namespace {

constexpr const char* kSchemaSql = R"sql(
CREATE SCHEMA IF NOT EXISTS pgflow;
CREATE TABLE IF NOT EXISTS pgflow.pipelines (
  name text PRIMARY KEY,
  slot text NOT NULL,
  publication text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now());
-- What each pipeline follows (its source.postgres.tables, '*' for a whole schema) and what it
-- does with tables that have no key (source.postgres.keyless_tables).
ALTER TABLE pgflow.pipelines
  ADD COLUMN IF NOT EXISTS keyless text NOT NULL DEFAULT 'full',
  ADD COLUMN IF NOT EXISTS table_schemas text[] NOT NULL DEFAULT '{}',
  ADD COLUMN IF NOT EXISTS table_names text[] NOT NULL DEFAULT '{}';
-- The tables pgflow set REPLICA IDENTITY FULL on (keyless_tables: full), with the identity
-- they had before, which `pgflow teardown` gives back.
CREATE TABLE IF NOT EXISTS pgflow.replica_identities (
  relid oid PRIMARY KEY,
  previous "char" NOT NULL,
  set_at timestamptz NOT NULL DEFAULT now());
-- (A sink creating a table reads it: the target gets the identity the application chose.)
GRANT SELECT ON pgflow.replica_identities TO PUBLIC;
CREATE TABLE IF NOT EXISTS pgflow.ddl_shapes (
  relid oid PRIMARY KEY,
  shape jsonb NOT NULL);
-- The key that authenticates DDL messages: anyone may call pg_logical_emit_message, so a
-- message is taken for DDL only with a valid MAC, which only the capture functions can make.
CREATE TABLE IF NOT EXISTS pgflow.ddl_secret (secret text NOT NULL);
REVOKE ALL ON pgflow.ddl_secret FROM PUBLIC;
-- Any role may reach the SECURITY DEFINER functions (registration, MAC checks); the tables
-- keep their own privileges.
GRANT USAGE ON SCHEMA pgflow TO PUBLIC;
INSERT INTO pgflow.ddl_secret
  SELECT gen_random_uuid()::text || gen_random_uuid()::text
  WHERE NOT EXISTS (SELECT 1 FROM pgflow.ddl_secret);
)sql";

// The shape of a table: what DDL replay reproduces (schemas/ddl.h, DdlTableShape).
constexpr const char* kShapeFunctionSql = R"sql(
CREATE OR REPLACE FUNCTION pgflow.table_shape(rel oid) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $f$
BEGIN
  RETURN (SELECT jsonb_build_object(
    'relid', c.oid::bigint, 'schema', n.nspname, 'name', c.relname,
    'columns', COALESCE((
      SELECT jsonb_agg(jsonb_build_object(
          'attnum', a.attnum,
          'name', a.attname,
          'type', format_type(a.atttypid, a.atttypmod),
          'collation', CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation THEN
                         (SELECT quote_ident(cn.nspname) || '.' || quote_ident(co.collname)
                          FROM pg_collation co JOIN pg_namespace cn ON cn.oid = co.collnamespace
                          WHERE co.oid = a.attcollation) END,
          'not_null', a.attnotnull,
          'default', CASE WHEN a.attgenerated = '' THEN pg_get_expr(d.adbin, d.adrelid) END,
          'generated', CASE WHEN a.attgenerated <> '' THEN pg_get_expr(d.adbin, d.adrelid) END,
          'identity', NULLIF(a.attidentity, ''))
        ORDER BY a.attnum)
      FROM pg_attribute a
      JOIN pg_type t ON t.oid = a.atttypid
      LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
      WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '[]'::jsonb),
    'primary_key', COALESCE((
      SELECT jsonb_agg(a.attname ORDER BY k.ord)
      FROM pg_index i
      CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
      JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
      WHERE i.indrelid = c.oid AND i.indisprimary AND k.ord <= i.indnkeyatts), '[]'::jsonb),
    -- Foreign keys, checks, unique and exclusion constraints, as pg_get_constraintdef writes
    -- them under this function's search_path (every table schema-qualified).
    'constraints', COALESCE((
      SELECT jsonb_agg(jsonb_build_object(
          'name', k.conname, 'type', k.contype::text,
          'definition', pg_get_constraintdef(k.oid)) ORDER BY k.conname)
      FROM pg_constraint k
      WHERE k.conrelid = c.oid AND k.contype IN ('f', 'c', 'u', 'x') AND k.conislocal),
      '[]'::jsonb),
    'keyless', pgflow.is_keyless(c.oid))
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.oid = rel);
END
$f$;
-- Whether a publication of a pgflow pipeline publishes the UPDATEs or DELETEs of `rel`:
-- listed itself or through a partition ancestor, by its schema or an ancestor's, or as one of
-- all tables (the rule PostgreSQL applies when it refuses a statement). pg_partition_ancestors
-- lists nothing for a table outside any partition tree, hence the union with `rel`.
CREATE OR REPLACE FUNCTION pgflow.followed_by_pipeline(rel oid) RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $f$
BEGIN
  RETURN (WITH self_and_ancestors(relid) AS (
    SELECT rel UNION SELECT relid FROM pg_partition_ancestors(rel))
  SELECT EXISTS (
    SELECT 1 FROM pgflow.pipelines pl JOIN pg_publication p ON p.pubname = pl.publication
    WHERE (p.pubupdate OR p.pubdelete)
      AND (p.puballtables
           OR EXISTS (SELECT 1 FROM pg_publication_rel pr
                      WHERE pr.prpubid = p.oid
                        AND pr.prrelid IN (SELECT relid FROM self_and_ancestors))
           OR EXISTS (SELECT 1 FROM pg_publication_namespace pn JOIN pg_class a
                        ON a.relnamespace = pn.pnnspid
                      WHERE pn.pnpubid = p.oid
                        AND a.oid IN (SELECT relid FROM self_and_ancestors)))));
END
$f$;
-- keyless_tables: skip. The publication of a pipeline that skips keyless tables lists its
-- tables one by one: `rel` joins it once it matches the pipeline's tables (itself or through
-- an inheritance parent) and has a replica identity, and leaves it when it loses that identity,
-- so that the application's UPDATEs and DELETEs never fail. A table renamed or moved away stays
-- (the pipeline follows it by OID, as it does a table it lists by name); a partition is
-- published through its root.
CREATE OR REPLACE FUNCTION pgflow.publish_skipping_keyless(rel oid) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $f$
DECLARE
  pub record;
  keyless boolean;
  publishable boolean;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pgflow.pipelines pl WHERE pl.keyless = 'skip') THEN
    RETURN;  -- (the common case, at the cost of one row read)
  END IF;
  keyless := pgflow.is_keyless(rel);
  publishable := EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = rel
                         AND c.relkind IN ('r', 'p') AND c.relpersistence = 'p'
                         AND NOT c.relispartition);
  FOR pub IN
    SELECT p.pubname,
           EXISTS (SELECT 1 FROM pg_publication_rel pr
                   WHERE pr.prpubid = p.oid AND pr.prrelid = rel) AS listed,
           EXISTS (WITH RECURSIVE lineage(relid) AS (
                     SELECT rel
                     UNION SELECT i.inhparent FROM pg_inherits i JOIN lineage l
                       ON i.inhrelid = l.relid)
                   SELECT 1 FROM lineage l JOIN pg_class c ON c.oid = l.relid
                   JOIN pg_namespace n ON n.oid = c.relnamespace
                   JOIN unnest(pl.table_schemas, pl.table_names) AS t(nsp, name)
                     ON t.nsp = n.nspname AND (t.name = '*' OR t.name = c.relname)) AS matched
    FROM pgflow.pipelines pl JOIN pg_publication p ON p.pubname = pl.publication
    WHERE pl.keyless = 'skip' AND NOT p.puballtables
  LOOP
    IF pub.listed AND keyless THEN
      EXECUTE format('ALTER PUBLICATION %I DROP TABLE %s', pub.pubname, rel::regclass);
    ELSIF NOT pub.listed AND pub.matched AND publishable AND NOT keyless THEN
      EXECUTE format('ALTER PUBLICATION %I ADD TABLE ONLY %s', pub.pubname, rel::regclass);
    END IF;
  END LOOP;
END
$f$;
-- Indexes and sequences: their name, so that a rename can be followed.
CREATE OR REPLACE FUNCTION pgflow.relation_name(rel oid) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $f$
BEGIN
  RETURN (SELECT jsonb_build_object('schema', n.nspname, 'name', c.relname)
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = rel);
END
$f$;
)sql";

// Authentication and registration: SECURITY DEFINER, so that the key stays unreadable and a
// pipeline run by a role that may not write in schema pgflow still registers.
constexpr const char* kMacFunctionsSql = R"sql(
CREATE OR REPLACE FUNCTION pgflow.ddl_mac(content text) RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
BEGIN
  RETURN (SELECT encode(sha256(convert_to(
                   s.secret || encode(sha256(convert_to(s.secret || content, 'UTF8')), 'hex'),
                   'UTF8')), 'hex')
          FROM pgflow.ddl_secret s LIMIT 1);
END
$f$;
REVOKE EXECUTE ON FUNCTION pgflow.ddl_mac(text) FROM PUBLIC;
CREATE OR REPLACE FUNCTION pgflow.ddl_verify(content text, mac text) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
  SELECT pgflow.ddl_mac(content) = mac
$f$;
CREATE OR REPLACE FUNCTION pgflow.emit_ddl(msg jsonb) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
DECLARE
  body text := msg::text;
BEGIN
  PERFORM pg_logical_emit_message(true, 'pgflow.ddl', pgflow.ddl_mac(body) || ':' || body);
END
$f$;
REVOKE EXECUTE ON FUNCTION pgflow.emit_ddl(jsonb) FROM PUBLIC;
DROP FUNCTION IF EXISTS pgflow.register_pipeline(text, text, text);
CREATE OR REPLACE FUNCTION pgflow.register_pipeline(name text, slot text, publication text,
                                                    keyless text, table_schemas text[],
                                                    table_names text[])
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
BEGIN
  -- The row steers what the capture does to a publication (keyless_tables: skip): a role that
  -- is not a superuser may record it as it is, or for a publication its role owns; no other.
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = session_user AND rolsuper)
     AND NOT EXISTS (SELECT 1 FROM pgflow.pipelines p
                     WHERE p.name = register_pipeline.name AND p.slot = register_pipeline.slot
                       AND p.publication = register_pipeline.publication
                       AND p.keyless = register_pipeline.keyless
                       AND p.table_schemas = register_pipeline.table_schemas
                       AND p.table_names = register_pipeline.table_names)
     AND NOT EXISTS (SELECT 1 FROM pg_publication pub
                     WHERE pub.pubname = register_pipeline.publication
                       AND pg_has_role(session_user, pub.pubowner, 'USAGE'))
  THEN
    RAISE EXCEPTION 'only a superuser, or the owner of publication %, may register pipeline % '
                    'with these settings: run `pgflow init` as a superuser', publication, name
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  INSERT INTO pgflow.pipelines AS p (name, slot, publication, keyless, table_schemas, table_names)
  VALUES (name, slot, publication, keyless, table_schemas, table_names)
  ON CONFLICT ON CONSTRAINT pipelines_pkey
  DO UPDATE SET slot = excluded.slot, publication = excluded.publication,
                keyless = excluded.keyless, table_schemas = excluded.table_schemas,
                table_names = excluded.table_names;
END
$f$;
-- table_rewrite: notes which tables the current transaction rewrote (a type change, a volatile
-- default), whose rows logical decoding never shows again.
CREATE OR REPLACE FUNCTION pgflow.capture_rewrite() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
BEGIN
  PERFORM set_config('pgflow.rewritten',
                     coalesce(nullif(current_setting('pgflow.rewritten', true), ''), ',')
                       || pg_event_trigger_table_rewrite_oid()::text || ',',
                     true);
END
$f$;
)sql";

// ddl_command_end: one message per command, with the shape before and after for tables (and
// for each inheritance child or partition the command changed with them), the previous name
// for indexes and sequences.
constexpr const char* kCaptureFunctionSql = R"sql(
CREATE OR REPLACE FUNCTION pgflow.capture_ddl() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
DECLARE
  cmd record;
  child record;
  msg jsonb;
  shape jsonb;
  old jsonb;
  identity_set boolean;
  capture_setting text := coalesce(current_setting('pgflow.capture_ddl', true), '');
  kind "char";
  rewritten text := coalesce(current_setting('pgflow.rewritten', true), '');
  statement text := left(current_query(), 2000);
  emit boolean := coalesce(current_setting('pgflow.capture_ddl', true), '')
                  NOT IN ('off', 'false', '0', 'no');
BEGIN
  FOR cmd IN SELECT * FROM pg_event_trigger_ddl_commands() LOOP
    CONTINUE WHEN cmd.in_extension OR cmd.schema_name = 'pgflow'
               OR cmd.schema_name LIKE 'pg\_temp%'
               OR (cmd.object_type = 'schema' AND cmd.object_identity = 'pgflow');
    msg := jsonb_build_object('tag', cmd.command_tag, 'object_type', cmd.object_type,
                              'identity', cmd.object_identity, 'schema', cmd.schema_name,
                              'objid', cmd.objid::bigint, 'statement', statement);
    kind := NULL;
    IF cmd.classid = 'pg_catalog.pg_class'::regclass THEN
      SELECT c.relkind INTO kind FROM pg_class c WHERE c.oid = cmd.objid;
    END IF;
    IF kind IN ('r', 'p') THEN
      -- The command and the inheritance children or partitions it changed with the table.
      FOR child IN
        WITH RECURSIVE tree(relid) AS (
          SELECT cmd.objid
          UNION SELECT i.inhrelid FROM pg_inherits i JOIN tree ON i.inhparent = tree.relid)
        SELECT relid FROM tree
      LOOP
        shape := pgflow.table_shape(child.relid);
        old := (SELECT s.shape FROM pgflow.ddl_shapes s WHERE s.relid = child.relid);
        -- Now, in this transaction, or the application's next UPDATE of the table fails: the
        -- publications of pipelines that skip keyless tables take it in or let it go; then a
        -- followed table created without a key, or left without one, gets REPLICA IDENTITY
        -- FULL. These commands' own capture stays silent. A replica identity the statement
        -- itself set (NOTHING, or an index) is the application's choice, kept.
        PERFORM set_config('pgflow.capture_ddl', 'off', true);
        PERFORM pgflow.publish_skipping_keyless(child.relid);
        identity_set := coalesce(shape->'keyless' = 'true'::jsonb
                                 AND pgflow.followed_by_pipeline(child.relid)
                                 AND NOT ((SELECT c.relreplident FROM pg_class c
                                           WHERE c.oid = child.relid) IN ('n', 'i')
                                          AND statement ~* 'replica\s+identity'), false);
        -- (Not recorded in a serializable transaction: one more table read and written there
        -- makes the application's transaction a likelier victim of serialization failures.)
        IF identity_set AND current_setting('transaction_isolation') <> 'serializable' THEN
          INSERT INTO pgflow.replica_identities (relid, previous)
            SELECT c.oid, c.relreplident FROM pg_class c WHERE c.oid = child.relid
            ON CONFLICT (relid) DO NOTHING;
        END IF;
        IF identity_set THEN
          EXECUTE format('ALTER TABLE %s REPLICA IDENTITY FULL', child.relid::regclass);
          PERFORM pgflow.publish_skipping_keyless(child.relid);
          shape := pgflow.table_shape(child.relid);
        END IF;
        PERFORM set_config('pgflow.capture_ddl', capture_setting, true);
        CONTINUE WHEN child.relid <> cmd.objid AND old IS NOT DISTINCT FROM shape;
        INSERT INTO pgflow.ddl_shapes (relid, shape) VALUES (child.relid, shape)
          ON CONFLICT (relid) DO UPDATE SET shape = excluded.shape;
        IF emit THEN
          PERFORM pgflow.emit_ddl(msg || jsonb_build_object(
            'object_type', 'table', 'objid', child.relid::bigint,
            'schema', shape->>'schema', 'name', shape->>'name',
            'identity', quote_ident(shape->>'schema') || '.' || quote_ident(shape->>'name'),
            'table', shape, 'old', old, 'identity_set_full', identity_set,
            'rewritten', strpos(rewritten, ',' || child.relid::text || ',') > 0));
        END IF;
      END LOOP;
      CONTINUE;
    ELSIF kind IN ('i', 'I') THEN
      -- `using`: the definition after "CREATE [UNIQUE] INDEX <name> ON [ONLY] <table> USING ",
      -- checked to start exactly so, for a sink to build the index on its own table name.
      msg := msg || (
        SELECT jsonb_build_object('name', x.relname, 'index', jsonb_build_object(
          'definition', x.def, 'unique', x.indisunique,
          'table_schema', x.nspname, 'table_name', x.tablename,
          'using', CASE WHEN starts_with(x.def, x.prefix || x.qualified || ' USING ')
                        THEN substr(x.def, length(x.prefix || x.qualified || ' USING ') + 1)
                        WHEN starts_with(x.def, x.prefix || 'ONLY ' || x.qualified || ' USING ')
                        THEN substr(x.def,
                                    length(x.prefix || 'ONLY ' || x.qualified || ' USING ') + 1)
                   END,
          'constraint', EXISTS (SELECT 1 FROM pg_constraint k
                                WHERE k.conindid = x.indexrelid AND k.conrelid = x.indrelid
                                  AND k.contype IN ('p', 'u', 'x'))))
        FROM (
          SELECT i.indexrelid, i.indrelid, i.indisunique, ic.relname, tn.nspname,
                 tc.relname AS tablename, pg_get_indexdef(i.indexrelid) AS def,
                 'CREATE ' || CASE WHEN i.indisunique THEN 'UNIQUE ' ELSE '' END || 'INDEX '
                   || quote_ident(ic.relname) || ' ON ' AS prefix,
                 quote_ident(tn.nspname) || '.' || quote_ident(tc.relname) AS qualified
          FROM pg_index i
          JOIN pg_class ic ON ic.oid = i.indexrelid
          JOIN pg_class tc ON tc.oid = i.indrelid
          JOIN pg_namespace tn ON tn.oid = tc.relnamespace
          WHERE i.indexrelid = cmd.objid) x);
    ELSIF kind = 'S' THEN
      msg := msg || (
        SELECT jsonb_build_object('name', c.relname, 'sequence', jsonb_build_object(
          'type', format_type(s.seqtypid, NULL), 'start', s.seqstart::text,
          'increment', s.seqincrement::text, 'min', s.seqmin::text, 'max', s.seqmax::text,
          'cycle', s.seqcycle,
          'identity', EXISTS (SELECT 1 FROM pg_depend d
                              WHERE d.classid = 'pg_class'::regclass AND d.objid = s.seqrelid
                                AND d.deptype = 'i'),
          'owned_by', (SELECT jsonb_build_object('schema', tn.nspname, 'table', tc.relname,
                                                 'column', a.attname)
                       FROM pg_depend d
                       JOIN pg_class tc ON tc.oid = d.refobjid
                       JOIN pg_namespace tn ON tn.oid = tc.relnamespace
                       JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                       WHERE d.classid = 'pg_class'::regclass AND d.objid = s.seqrelid
                         AND d.refclassid = 'pg_class'::regclass AND d.deptype = 'a'
                         AND d.refobjsubid > 0)))
        FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid
        WHERE s.seqrelid = cmd.objid);
    END IF;
    IF kind IN ('i', 'I', 'S') THEN
      shape := pgflow.relation_name(cmd.objid);
      msg := msg || jsonb_build_object(
        'old', (SELECT s.shape FROM pgflow.ddl_shapes s WHERE s.relid = cmd.objid));
      INSERT INTO pgflow.ddl_shapes (relid, shape) VALUES (cmd.objid, shape)
        ON CONFLICT (relid) DO UPDATE SET shape = excluded.shape;
    END IF;
    IF emit THEN
      PERFORM pgflow.emit_ddl(msg);
    END IF;
  END LOOP;
END
$f$;
)sql";

// sql_drop: the objects a command dropped. Constraints come first (a dropped table's foreign
// keys on other tables go before it); then tables, always (DROP SCHEMA ... CASCADE drops them
// as dependents), and the other objects the command named. Objects dropped along with a table
// (its indexes, row type, defaults) are not described; dropped columns are described by the
// ALTER TABLE's own message.
constexpr const char* kDropFunctionSql = R"sql(
CREATE OR REPLACE FUNCTION pgflow.capture_drop() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
DECLARE
  obj record;
  pass int;
  statement text := left(current_query(), 2000);
  emit boolean := coalesce(current_setting('pgflow.capture_ddl', true), '')
                  NOT IN ('off', 'false', '0', 'no');
BEGIN
  FOR pass IN 1..2 LOOP
    FOR obj IN SELECT * FROM pg_event_trigger_dropped_objects() LOOP
      CONTINUE WHEN obj.is_temporary OR obj.schema_name = 'pgflow';
      IF pass = 1 THEN
        CONTINUE WHEN obj.object_type <> 'table constraint' OR NOT emit;
        PERFORM pgflow.emit_ddl(jsonb_build_object(
          'tag', tg_tag, 'object_type', obj.object_type, 'identity', obj.object_identity,
          'schema', obj.schema_name, 'name', obj.address_names[3],
          'table_schema', obj.address_names[1], 'table_name', obj.address_names[2],
          'objid', obj.objid::bigint, 'dropped', true, 'statement', statement));
        CONTINUE;
      END IF;
      CONTINUE WHEN obj.objsubid <> 0 OR obj.object_type = 'table constraint';
      IF obj.object_type IN ('table', 'index', 'sequence') THEN
        DELETE FROM pgflow.ddl_shapes WHERE relid = obj.objid;
        IF current_setting('transaction_isolation') <> 'serializable' THEN
          DELETE FROM pgflow.replica_identities WHERE relid = obj.objid;
        END IF;
      END IF;
      CONTINUE WHEN NOT emit OR (NOT obj.original AND obj.object_type <> 'table');
      PERFORM pgflow.emit_ddl(jsonb_build_object(
        'tag', tg_tag, 'object_type', obj.object_type, 'identity', obj.object_identity,
        'schema', obj.schema_name, 'name', obj.object_name, 'objid', obj.objid::bigint,
        'dropped', true, 'statement', statement));
    END LOOP;
  END LOOP;
END
$f$;
)sql";

// Event triggers fire ALWAYS, so that DDL replayed into a database that is itself a pgflow
// target (session_replication_role = replica) is captured for the next pipeline of a chain.
constexpr const char* kTriggersSql = R"sql(
DO $do$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = 'pgflow_capture_ddl') THEN
    CREATE EVENT TRIGGER pgflow_capture_ddl ON ddl_command_end
      EXECUTE FUNCTION pgflow.capture_ddl();
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = 'pgflow_capture_drop') THEN
    CREATE EVENT TRIGGER pgflow_capture_drop ON sql_drop
      EXECUTE FUNCTION pgflow.capture_drop();
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = 'pgflow_capture_rewrite') THEN
    CREATE EVENT TRIGGER pgflow_capture_rewrite ON table_rewrite
      EXECUTE FUNCTION pgflow.capture_rewrite();
  END IF;
  ALTER EVENT TRIGGER pgflow_capture_ddl ENABLE ALWAYS;
  ALTER EVENT TRIGGER pgflow_capture_drop ENABLE ALWAYS;
  ALTER EVENT TRIGGER pgflow_capture_rewrite ENABLE ALWAYS;
END
$do$;
)sql";

// Shapes of the relations that have none recorded yet (every one, at the first install).
constexpr const char* kRecordShapesSql = R"sql(
INSERT INTO pgflow.ddl_shapes (relid, shape)
SELECT c.oid, CASE WHEN c.relkind IN ('r', 'p') THEN pgflow.table_shape(c.oid)
                   ELSE pgflow.relation_name(c.oid) END
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'i', 'I', 'S') AND c.relpersistence <> 't'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgflow')
  AND n.nspname NOT LIKE 'pg\_%'
  AND NOT EXISTS (SELECT 1 FROM pgflow.ddl_shapes s WHERE s.relid = c.oid)
ON CONFLICT (relid) DO NOTHING
)sql";

// Old shapes and replica identities of relations that no longer exist (dropped while the
// triggers were absent).
constexpr const char* kForgetShapesSql =
    "DELETE FROM pgflow.ddl_shapes s WHERE NOT EXISTS "
    "(SELECT 1 FROM pg_class c WHERE c.oid = s.relid AND c.relkind IN ('r', 'p', 'i', 'I', 'S'));"
    "DELETE FROM pgflow.replica_identities r WHERE NOT EXISTS "
    "(SELECT 1 FROM pg_class c WHERE c.oid = r.relid AND c.relkind IN ('r', 'p'))";

absl::StatusOr<bool> Exists(PGconn* conn, const std::string& sql,
                            const std::vector<std::string>& params = {}) {
  absl::StatusOr<PgResultPtr> res = Exec(conn, sql, params);
  if (!res.ok()) return res.status();
  return PQntuples(res->get()) > 0 && PQgetvalue(res->get(), 0, 0)[0] == 't';
}

absl::StatusOr<bool> IsSuperuser(PGconn* conn) {
  return Exists(conn, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user");
}

// Gives each table pgflow set REPLICA IDENTITY FULL on the identity it had, unless a pipeline
// still follows it or someone changed it since; names each one it keeps, and why.
absl::Status RestoreReplicaIdentities(PGconn* conn, TeardownReport* report) {
  absl::StatusOr<bool> recorded =
      Exists(conn, "SELECT to_regclass('pgflow.replica_identities') IS NOT NULL");
  if (!recorded.ok() || !*recorded) return recorded.status();
  absl::StatusOr<PgResultPtr> res =
      Exec(conn,
           "SELECT r.relid, c.oid::regclass::text, c.relreplident = 'f', CASE r.previous WHEN 'n' "
           "THEN 'NOTHING' ELSE 'DEFAULT' END, pgflow.followed_by_pipeline(c.oid) FROM "
           "pgflow.replica_identities r LEFT JOIN pg_class c ON c.oid = r.relid ORDER BY 2");
  if (!res.ok()) return res.status();
  for (int i = 0; i < PQntuples(res->get()); ++i) {
    PGresult* r = res->get();
    const std::string relid = PQgetvalue(r, i, 0);
    const std::string table = PQgetvalue(r, i, 1);
    const std::string alter =
        absl::StrCat("ALTER TABLE ", table, " REPLICA IDENTITY ", PQgetvalue(r, i, 3));
    if (PQgetvalue(r, i, 4)[0] == 't') {
      report->kept.push_back(absl::StrCat(
          "REPLICA IDENTITY FULL on ", table,
          ", which pgflow set and a pipeline's publication still needs (once it is torn down: `",
          alter, "`)"));
      continue;
    }
    // Gone, or changed since: the record goes, nothing else.
    const bool restore = !PQgetisnull(r, i, 1) && PQgetvalue(r, i, 2)[0] == 't';
    absl::StatusOr<PgResultPtr> done =
        Exec(conn, absl::StrCat("BEGIN; SET LOCAL pgflow.capture_ddl = off; ", restore ? alter : "",
                                restore ? "; " : "",
                                "DELETE FROM pgflow.replica_identities WHERE relid = ", relid,
                                "; COMMIT"));
    if (!done.ok()) {
      Exec(conn, "ROLLBACK").IgnoreError();
      if (absl::IsUnavailable(done.status())) return done.status();
      const char* user = PQuser(conn);
      report->kept.push_back(absl::StrCat("REPLICA IDENTITY FULL on ", table,
                                          ", which pgflow set (role ", user != nullptr ? user : "?",
                                          " may not alter the table): as its owner or a "
                                          "superuser, `",
                                          alter, "`"));
      continue;
    }
    if (restore) {
      report->removed.push_back(absl::StrCat("REPLICA IDENTITY FULL that pgflow set on ", table,
                                             " (", PQgetvalue(r, i, 3), " again)"));
    }
  }
  return absl::OkStatus();
}

// pgflow.is_keyless(rel): kKeylessCondition, for the capture functions.
std::string IsKeylessFunctionSql() {
  return absl::StrCat(
      "CREATE OR REPLACE FUNCTION pgflow.is_keyless(rel oid) RETURNS boolean "
      "LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $f$ BEGIN RETURN (SELECT ",
      kKeylessCondition, " FROM pg_class c WHERE c.oid = rel); END $f$;");
}

}  // namespace

absl::StatusOr<std::vector<std::string>> InstallDdlCapture(PGconn* conn) {
  absl::StatusOr<bool> super = IsSuperuser(conn);
  if (!super.ok()) return super.status();
  absl::StatusOr<bool> had_schema =
      Exists(conn, "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'pgflow')");
  if (!had_schema.ok()) return had_schema.status();
  absl::StatusOr<bool> had_triggers =
      Exists(conn,
             "SELECT count(*) = 3 FROM pg_event_trigger WHERE evtname IN "
             "('pgflow_capture_ddl', 'pgflow_capture_drop', 'pgflow_capture_rewrite')");
  if (!had_triggers.ok()) return had_triggers.status();
  if (!*super) {
    // Installed (or updated) only by a superuser; another role uses what is there.
    if (*had_triggers) return std::vector<std::string>();
    return absl::FailedPreconditionError(absl::StrCat(
        "capturing schema changes needs event triggers, which only a superuser can create, and ",
        Describe(conn),
        " connects as a role that is not one: run `pgflow init` once as a superuser"));
  }
  // One transaction: a concurrent init sees all of it or none of it.
  std::string sql = absl::StrCat("BEGIN;", kSchemaSql, IsKeylessFunctionSql(), kShapeFunctionSql,
                                 kMacFunctionsSql, kCaptureFunctionSql, kDropFunctionSql,
                                 kTriggersSql, kRecordShapesSql, ";", kForgetShapesSql, "; COMMIT");
  absl::StatusOr<PgResultPtr> res = Exec(conn, sql);
  if (!res.ok()) {
    Exec(conn, "ROLLBACK").IgnoreError();
    return absl::Status(res.status().code(),
                        absl::StrCat("installing pgflow's schema in ", Describe(conn), ": ",
                                     res.status().message()));
  }
  std::vector<std::string> created;
  if (!*had_schema) created.push_back("schema pgflow");
  if (!*had_triggers) {
    created.push_back(
        "DDL capture (event triggers pgflow_capture_ddl, pgflow_capture_drop, "
        "pgflow_capture_rewrite)");
  }
  return created;
}

absl::Status RegisterPipeline(PGconn* conn, const PipelineRegistration& r) {
  absl::StatusOr<PgResultPtr> res =
      Exec(conn, "SELECT pgflow.register_pipeline($1, $2, $3, $4, $5, $6)",
           {r.pipeline, r.slot, r.publication, r.keyless, r.table_schemas, r.table_names});
  if (res.ok() || PQstatus(conn) != CONNECTION_OK) return res.status();
  return absl::Status(res.status().code(),
                      absl::StrCat("registering pipeline ", r.pipeline, " in ", Describe(conn),
                                   ": ", res.status().message(),
                                   ". pgflow's schema there may be an older version's: run "
                                   "`pgflow init` with this pgflow as a superuser"));
}

absl::StatusOr<TeardownReport> Teardown(PGconn* conn, const std::string& pipeline,
                                        const std::string& slot, const std::string& publication) {
  TeardownReport report;
  absl::StatusOr<PgResultPtr> res =
      Exec(conn, "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1", {slot});
  if (!res.ok()) return res.status();
  if (PQntuples(res->get()) == 1) {
    if (!PQgetisnull(res->get(), 0, 0)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "replication slot ", slot, " is in use by server process ", PQgetvalue(res->get(), 0, 0),
          ": stop the pgflow running pipeline ", pipeline, " first"));
    }
    res = Exec(conn, "SELECT pg_drop_replication_slot($1)", {slot});
    if (!res.ok()) return res.status();
    report.removed.push_back(absl::StrCat("replication slot ", slot));
  }
  // A role that is not a superuser removes what is its own (the slot, the pipeline's rows);
  // what a superuser's `init` made stays, said so.
  absl::StatusOr<bool> super = IsSuperuser(conn);
  if (!super.ok()) return super.status();
  absl::StatusOr<PgResultPtr> pub =
      Exec(conn,
           "SELECT pg_get_userbyid(pubowner), pg_has_role(pubowner, 'USAGE') FROM pg_publication "
           "WHERE pubname = $1",
           {publication});
  if (!pub.ok()) return pub.status();
  bool publication_kept = false;
  if (PQntuples(pub->get()) == 1) {
    publication_kept = PQgetvalue(pub->get(), 0, 1)[0] != 't';
    if (!publication_kept) {
      res = Exec(conn, absl::StrCat("DROP PUBLICATION ", QuoteIdent(publication)));
      if (!res.ok()) return res.status();
      report.removed.push_back(absl::StrCat("publication ", publication));
    } else {
      report.kept.push_back(absl::StrCat("publication ", publication, " (owned by ",
                                         PQgetvalue(pub->get(), 0, 0),
                                         ": run `pgflow teardown` as a superuser to remove it)"));
    }
  }
  absl::StatusOr<bool> schema =
      Exists(conn, "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'pgflow')");
  if (!schema.ok()) return schema.status();
  if (!*schema) return report;

  // The pipeline's rows in pgflow's tables (those that exist: older installs lack some).
  bool registry = false;
  bool snapshots = false;
  for (const char* table : {"pipelines", "snapshots", "snapshot_chunks", "backfills"}) {
    const char* column = std::string_view(table) == "pipelines" ? "name" : "pipeline";
    absl::StatusOr<bool> present =
        Exists(conn, "SELECT to_regclass($1) IS NOT NULL", {absl::StrCat("pgflow.", table)});
    if (!present.ok()) return present.status();
    if (!*present) continue;
    if (std::string_view(table) == "pipelines") {
      registry = true;
      // A publication left in place stays in the capture's care (keyless tables) until a
      // superuser's teardown removes both.
      if (publication_kept) continue;
    }
    if (std::string_view(table) == "snapshots") snapshots = true;
    res = Exec(conn, absl::StrCat("DELETE FROM pgflow.", table, " WHERE ", column, " = $1"),
               {pipeline});
    if (!res.ok()) return res.status();
  }
  if (absl::Status s = RestoreReplicaIdentities(conn, &report); !s.ok()) return s;
  absl::StatusOr<PgResultPtr> others = Exec(
      conn, absl::StrCat("SELECT string_agg(name, ', ' ORDER BY name) FROM (SELECT NULL::text "
                         "AS name WHERE false",
                         registry ? " UNION SELECT name FROM pgflow.pipelines" : "",
                         snapshots ? " UNION SELECT pipeline FROM pgflow.snapshots" : "", ") p"));
  if (!others.ok()) return others.status();
  if (!PQgetisnull(others->get(), 0, 0)) {
    report.removed.push_back(absl::StrCat("pipeline ", pipeline, "'s rows in schema pgflow"));
    report.kept.push_back(absl::StrCat("schema pgflow and the DDL capture, still used by ",
                                       PQgetvalue(others->get(), 0, 0)));
    return report;
  }
  if (!*super) {
    report.removed.push_back(absl::StrCat("pipeline ", pipeline, "'s rows in schema pgflow"));
    report.kept.push_back(
        "schema pgflow and the DDL capture (a superuser's `pgflow teardown` removes them)");
    return report;
  }
  res = Exec(conn,
             "DROP EVENT TRIGGER IF EXISTS pgflow_capture_ddl; "
             "DROP EVENT TRIGGER IF EXISTS pgflow_capture_drop; "
             "DROP EVENT TRIGGER IF EXISTS pgflow_capture_rewrite; "
             "DROP SCHEMA pgflow CASCADE");
  if (!res.ok()) return res.status();
  report.removed.push_back("DDL capture (event triggers) and schema pgflow");
  return report;
}

}  // namespace pgflow
