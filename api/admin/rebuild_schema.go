package admin

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/stkgate/stkgate/api/store"
)

// The rebuilt table's definition: made by the migrations, checked against
// the live table, given its owner and grants; and the live table's
// renaming aside.

// prepareTable makes the rebuilt table by running the migrations in the
// rebuild schema, checks it against the live one, and makes its sequence
// count down from -1: ids of its own never meet the live ids carried over.
func (r *rebuilder) prepareTable(ctx context.Context, conn *sqlx.Conn) error {
	if err := store.Migrate(ctx, r.rdb.DB); err != nil {
		return fmt.Errorf("rebuild: migrate %s: %w", rebuildSchema, err)
	}
	if err := r.checkSchema(ctx, conn); err != nil {
		return err
	}
	_, err := conn.ExecContext(ctx, `ALTER SEQUENCE `+rebuildSchema+`.stk_pushes_id_seq
		INCREMENT BY -1 MINVALUE -9223372036854775808 MAXVALUE -1 START WITH -1 RESTART WITH -1`)
	if err != nil {
		return fmt.Errorf("rebuild: sequence: %w", err)
	}
	return nil
}

// checkSchema compares the live table with the rebuilt one: the same
// columns, and no index, constraint or view on the live one that the
// rebuilt one would lose. An index the migrations make and the live table
// lacks is only noted: the rebuilt table is what a fresh database has.
// Each step (checkColumns, checkIndexes, checkAttached) returns what it
// found wrong; all of it is refused at once.
func (r *rebuilder) checkSchema(ctx context.Context, conn *sqlx.Conn) error {
	var bad []string
	for _, check := range []func(context.Context, *sqlx.Conn) ([]string, error){r.checkColumns, r.checkIndexes, r.checkAttached} {
		found, err := check(ctx, conn)
		if err != nil {
			return err
		}
		bad = append(bad, found...)
	}
	if len(bad) > 0 {
		return fmt.Errorf("rebuild: the live table is not the one the migrations make, nothing changed:\n  %s", strings.Join(bad, "\n  "))
	}
	var err error
	r.liveDef, r.liveVersion, err = r.definition(ctx, conn)
	return err
}

// checkColumns finds the columns of the live table that differ from the
// rebuilt one's, and keeps the rebuilt one's in r.cols (but id and
// updated_at).
func (r *rebuilder) checkColumns(ctx context.Context, conn *sqlx.Conn) ([]string, error) {
	type col struct {
		Name string `db:"column_name"`
		Type string `db:"data_type"`
		Null string `db:"is_nullable"`
	}
	cols := func(schema string) (map[string]col, []string, error) {
		var cs []col
		err := conn.SelectContext(ctx, &cs, `SELECT column_name, data_type, is_nullable FROM information_schema.columns
			WHERE table_schema = $1 AND table_name = 'stk_pushes' ORDER BY ordinal_position`, schema)
		m := map[string]col{}
		var names []string
		for _, c := range cs {
			m[c.Name] = c
			names = append(names, c.Name)
		}
		return m, names, err
	}
	liveCols, _, err := cols(r.live)
	if err != nil {
		return nil, fmt.Errorf("rebuild: columns: %w", err)
	}
	newCols, names, err := cols(rebuildSchema)
	if err != nil {
		return nil, fmt.Errorf("rebuild: columns: %w", err)
	}
	var bad []string
	for n, c := range liveCols {
		if nc, ok := newCols[n]; !ok || nc != c {
			bad = append(bad, fmt.Sprintf("column %s (%s) differs or is not made by the migrations", n, c.Type))
		}
	}
	for n := range newCols {
		if _, ok := liveCols[n]; !ok {
			bad = append(bad, fmt.Sprintf("column %s is missing from the live table", n))
		}
	}
	for _, n := range names {
		if n != "id" && n != "updated_at" {
			r.cols = append(r.cols, n)
		}
	}
	return bad, nil
}

// checkIndexes finds the indexes and constraints of the live table that the
// rebuilt one lacks or defines otherwise, and notes those the rebuilt one
// has alone (r.rep.schemaNotes).
func (r *rebuilder) checkIndexes(ctx context.Context, conn *sqlx.Conn) ([]string, error) {
	// Indexes and constraints by name and definition, the schema left out.
	defs := func(schema string) (map[string]string, error) {
		var rows []struct {
			Name string `db:"name"`
			Def  string `db:"def"`
		}
		err := conn.SelectContext(ctx, &rows, `
			SELECT 'index ' || i.relname AS name, replace(pg_get_indexdef(x.indexrelid), quote_ident($1) || '.', '') AS def
			  FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
			 WHERE x.indrelid = (quote_ident($1) || '.stk_pushes')::regclass
			UNION ALL
			SELECT 'constraint ' || conname, pg_get_constraintdef(oid)
			  FROM pg_constraint WHERE conrelid = (quote_ident($1) || '.stk_pushes')::regclass`, schema)
		m := map[string]string{}
		for _, row := range rows {
			m[row.Name] = row.Def
		}
		return m, err
	}
	liveDefs, err := defs(r.live)
	if err != nil {
		return nil, fmt.Errorf("rebuild: indexes: %w", err)
	}
	newDefs, err := defs(rebuildSchema)
	if err != nil {
		return nil, fmt.Errorf("rebuild: indexes: %w", err)
	}
	var bad []string
	for n, d := range liveDefs {
		if nd, ok := newDefs[n]; !ok || nd != d {
			bad = append(bad, fmt.Sprintf("%s (%s) is not the migrations'", n, d))
		}
	}
	for n := range newDefs {
		if _, ok := liveDefs[n]; !ok {
			r.rep.schemaNotes = append(r.rep.schemaNotes, n+" is missing from the live table; the rebuilt one has it")
		}
	}
	return bad, nil
}

// checkAttached finds what is attached to the live table by its oid (views,
// triggers, policies, publications, foreign keys) or set on it and not by
// the migrations: it would stay with the old table, or be lost.
func (r *rebuilder) checkAttached(ctx context.Context, conn *sqlx.Conn) ([]string, error) {
	var bad []string
	var views []string
	if err := conn.SelectContext(ctx, &views, `
		SELECT DISTINCT v.oid::regclass::text FROM pg_depend d
		  JOIN pg_rewrite w ON w.oid = d.objid JOIN pg_class v ON v.oid = w.ev_class
		 WHERE d.refobjid = (quote_ident($1) || '.stk_pushes')::regclass AND v.oid <> d.refobjid`, r.live); err != nil {
		return nil, fmt.Errorf("rebuild: views: %w", err)
	}
	for _, v := range views {
		bad = append(bad, "view "+v+" reads the live table and would go on reading the old one")
	}
	// What else goes with the table by its oid, and so would stay with the
	// old one, or is set on it and not by the migrations. A column option
	// named pg_… is the server's own bookkeeping (some builds keep one per
	// table), not a setting: left out.
	var extra []string
	if err := conn.SelectContext(ctx, &extra, `
		SELECT 'trigger ' || t.tgname || ' is on the live table and would stay on the old one'
		  FROM pg_trigger t WHERE t.tgrelid = $1::regclass AND NOT t.tgisinternal
		   AND t.tgname NOT IN (SELECT tgname FROM pg_trigger WHERE tgrelid = $2::regclass)
		UNION ALL
		SELECT 'row level security is enabled on the live table, not by the migrations'
		  FROM pg_class WHERE oid = $1::regclass AND (relrowsecurity OR relforcerowsecurity)
		UNION ALL
		SELECT 'policy ' || polname || ' is on the live table and would stay on the old one'
		  FROM pg_policy WHERE polrelid = $1::regclass
		UNION ALL
		SELECT 'publication ' || p.pubname || ' publishes the live table and would go on publishing the old one'
		  FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid WHERE pr.prrelid = $1::regclass
		UNION ALL
		SELECT 'foreign key ' || conname || ' of ' || conrelid::regclass::text || ' refers to the live table and would go on referring to the old one'
		  FROM pg_constraint WHERE confrelid = $1::regclass AND contype = 'f' AND conrelid <> $1::regclass
		UNION ALL
		SELECT 'column ' || attname || ' has grants of its own (' || attacl::text || '), which are not carried over'
		  FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped AND attacl IS NOT NULL
		UNION ALL
		SELECT 'storage settings ' || COALESCE(l.reloptions::text, '{}') || ' of the live table are not the migrations'' (' ||
		       COALESCE(n.reloptions::text, '{}') || '), or its tablespace or persistence differs'
		  FROM pg_class l, pg_class n WHERE l.oid = $1::regclass AND n.oid = $2::regclass
		   AND (l.reloptions IS DISTINCT FROM n.reloptions OR l.reltablespace <> n.reltablespace OR l.relpersistence <> n.relpersistence)
		UNION ALL
		SELECT 'column ' || l.attname || '''s storage settings (storage, statistics, options, compression) are not the migrations'''
		  FROM pg_attribute l JOIN pg_attribute n ON n.attrelid = $2::regclass AND n.attname = l.attname
		 WHERE l.attrelid = $1::regclass AND l.attnum > 0 AND NOT l.attisdropped
		   AND (l.attstorage, l.attstattarget, l.attcompression, ARRAY(SELECT o FROM unnest(l.attoptions) o WHERE o NOT LIKE 'pg\_%' ORDER BY o))
		       IS DISTINCT FROM (n.attstorage, n.attstattarget, n.attcompression, ARRAY(SELECT o FROM unnest(n.attoptions) o WHERE o NOT LIKE 'pg\_%' ORDER BY o))`,
		r.liveTable(), rebuildSchema+".stk_pushes"); err != nil {
		return nil, fmt.Errorf("rebuild: check the live table: %w", err)
	}
	return append(bad, extra...), nil
}

// definition is what checkSchema checked of the live table, as one text,
// and the migrations' version: the swap reads them again under its lock,
// and refuses when a migration (or a hand) changed them during the copy,
// whose table would lack the change. Grants and owner are left out: the
// swap copies them as they are then.
func (r *rebuilder) definition(ctx context.Context, q sqlx.QueryerContext) (def string, version int64, err error) {
	if err := sqlx.GetContext(ctx, q, &def, `SELECT concat_ws(E'\n',
		(SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod) || ' ' || a.attnotnull || ' ' ||
		        COALESCE(pg_get_expr(d.adbin, d.adrelid), '') || ' ' || a.attstorage::text || ' ' || a.attstattarget || ' ' ||
		        ARRAY(SELECT o FROM unnest(a.attoptions) o WHERE o NOT LIKE 'pg\_%' ORDER BY o)::text || ' ' || a.attcompression::text || ' ' || COALESCE(a.attacl::text, ''), ', ' ORDER BY a.attnum)
		   FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
		  WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped),
		(SELECT string_agg(i.relname || ' ' || pg_get_indexdef(x.indexrelid), ', ' ORDER BY 1)
		   FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid WHERE x.indrelid = $1::regclass),
		(SELECT string_agg(conname || ' ' || conrelid || ' ' || pg_get_constraintdef(oid), ', ' ORDER BY 1)
		   FROM pg_constraint WHERE conrelid = $1::regclass OR confrelid = $1::regclass),
		(SELECT string_agg(tgname, ', ' ORDER BY 1) FROM pg_trigger WHERE tgrelid = $1::regclass),
		(SELECT string_agg(polname, ', ' ORDER BY 1) FROM pg_policy WHERE polrelid = $1::regclass),
		(SELECT string_agg(prpubid::text, ', ' ORDER BY 1) FROM pg_publication_rel WHERE prrelid = $1::regclass),
		(SELECT string_agg(DISTINCT v.oid::text, ', ') FROM pg_depend d JOIN pg_rewrite w ON w.oid = d.objid JOIN pg_class v ON v.oid = w.ev_class
		  WHERE d.refobjid = $1::regclass AND v.oid <> d.refobjid),
		(SELECT relrowsecurity || ' ' || relforcerowsecurity || ' ' || COALESCE(reloptions::text, '') || ' ' || reltablespace || ' ' || relpersistence::text
		   FROM pg_class WHERE oid = $1::regclass))`, r.liveTable()); err != nil {
		return "", 0, fmt.Errorf("rebuild: the live table's definition: %w", err)
	}
	// The version table is found as the services find it (search_path).
	var found bool
	if err := sqlx.GetContext(ctx, q, &found, `SELECT to_regclass($1) IS NOT NULL`, store.MigrationTable); err != nil {
		return "", 0, fmt.Errorf("rebuild: the migrations' version: %w", err)
	}
	if found {
		if err := sqlx.GetContext(ctx, q, &version, `SELECT COALESCE(max(version_id), 0) FROM `+pq.QuoteIdentifier(store.MigrationTable)+` WHERE is_applied`); err != nil {
			return "", 0, fmt.Errorf("rebuild: the migrations' version: %w", err)
		}
	}
	return def, version, nil
}

// checkUnchanged reads the live table's definition and the migrations'
// version again (under the swap's lock) and refuses when they changed.
func (r *rebuilder) checkUnchanged(ctx context.Context, q sqlx.QueryerContext) error {
	def, version, err := r.definition(ctx, q)
	if err != nil {
		return err
	}
	if version != r.liveVersion {
		return fmt.Errorf("rebuild: the migrations' version changed during the rebuild (%d, now %d): the rebuilt table would lack the change; nothing changed, run it again", r.liveVersion, version)
	}
	if def != r.liveDef {
		return errors.New("rebuild: the live table's definition changed during the rebuild (a migration, or by hand): the rebuilt table would lack the change; nothing changed, run it again")
	}
	return nil
}

// copyGrants gives the rebuilt table and its sequence the live ones' owner
// and privileges.
func (r *rebuilder) copyGrants(ctx context.Context, tx *sqlx.Tx) error {
	for _, obj := range []struct{ kind, live, rebuilt string }{
		{"TABLE", r.liveTable(), rebuildSchema + ".stk_pushes"},
		{"SEQUENCE", r.liveSeq, rebuildSchema + ".stk_pushes_id_seq"},
	} {
		var grants []struct {
			Grantee   string `db:"grantee"`
			Privilege string `db:"privilege_type"`
			Grantable bool   `db:"is_grantable"`
		}
		if err := tx.SelectContext(ctx, &grants, `
			SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END AS grantee,
			       a.privilege_type, a.is_grantable
			  FROM pg_class c, aclexplode(c.relacl) a
			 WHERE c.oid = $1::regclass AND a.grantee <> c.relowner`, obj.live); err != nil {
			return fmt.Errorf("rebuild: grants: %w", err)
		}
		for _, g := range grants {
			q := fmt.Sprintf(`GRANT %s ON %s %s TO %s`, g.Privilege, obj.kind, obj.rebuilt, g.Grantee)
			if g.Grantable {
				q += " WITH GRANT OPTION"
			}
			if _, err := tx.ExecContext(ctx, q); err != nil {
				return fmt.Errorf("rebuild: grants: %w", err)
			}
		}
	}
	var owner, me string
	if err := tx.GetContext(ctx, &owner, `SELECT quote_ident(pg_get_userbyid(relowner)) FROM pg_class WHERE oid = $1::regclass`, r.liveTable()); err != nil {
		return fmt.Errorf("rebuild: owner: %w", err)
	}
	if err := tx.GetContext(ctx, &me, `SELECT quote_ident(current_user)`); err != nil {
		return fmt.Errorf("rebuild: owner: %w", err)
	}
	if owner != me {
		// Its owned sequence follows it.
		if _, err := tx.ExecContext(ctx, `ALTER TABLE `+rebuildSchema+`.stk_pushes OWNER TO `+owner); err != nil {
			return fmt.Errorf("rebuild: give the rebuilt table the live one's owner: %w", err)
		}
	}
	return nil
}

// renameLive renames the live table, its indexes (and so their
// constraints) and its sequence aside, with a suffix of the time.
func (r *rebuilder) renameLive(ctx context.Context, tx *sqlx.Tx) (string, error) {
	// The first suffix free: two rebuilds may end within one second.
	var suffix string
	for n := 1; ; n++ {
		suffix = "_old_" + time.Now().UTC().Format("20060102150405")
		if n > 1 {
			suffix += fmt.Sprintf("_%d", n)
		}
		var taken bool
		if err := tx.GetContext(ctx, &taken, `SELECT to_regclass($1) IS NOT NULL`,
			pq.QuoteIdentifier(r.live)+"."+pq.QuoteIdentifier("stk_pushes"+suffix)); err != nil {
			return "", fmt.Errorf("rebuild: rename the live table: %w", err)
		}
		if !taken {
			break
		}
	}
	aside := func(name string) string {
		return name[:min(len(name), 63-len(suffix))] + suffix
	}
	var indexes []string
	if err := tx.SelectContext(ctx, &indexes, `SELECT i.relname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
		WHERE x.indrelid = $1::regclass`, r.liveTable()); err != nil {
		return "", fmt.Errorf("rebuild: rename the live table: %w", err)
	}
	schema := pq.QuoteIdentifier(r.live) + "."
	stmts := []string{`ALTER TABLE ` + r.liveTable() + ` RENAME TO ` + pq.QuoteIdentifier(aside("stk_pushes"))}
	for _, ix := range indexes {
		stmts = append(stmts, `ALTER INDEX `+schema+pq.QuoteIdentifier(ix)+` RENAME TO `+pq.QuoteIdentifier(aside(ix)))
	}
	seq := r.liveSeq[strings.LastIndexByte(r.liveSeq, '.')+1:]
	stmts = append(stmts, `ALTER SEQUENCE `+r.liveSeq+` RENAME TO `+pq.QuoteIdentifier(aside(strings.Trim(seq, `"`))))
	for _, s := range stmts {
		if _, err := tx.ExecContext(ctx, s); err != nil {
			return "", fmt.Errorf("rebuild: rename the live table: %w", err)
		}
	}
	return aside("stk_pushes"), nil
}
