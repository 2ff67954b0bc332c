package admin

import (
	"context"
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
func (r *rebuilder) checkSchema(ctx context.Context, conn *sqlx.Conn) error {
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
		return fmt.Errorf("rebuild: columns: %w", err)
	}
	newCols, names, err := cols(rebuildSchema)
	if err != nil {
		return fmt.Errorf("rebuild: columns: %w", err)
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
		return fmt.Errorf("rebuild: indexes: %w", err)
	}
	newDefs, err := defs(rebuildSchema)
	if err != nil {
		return fmt.Errorf("rebuild: indexes: %w", err)
	}
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
	var views []string
	if err := conn.SelectContext(ctx, &views, `
		SELECT DISTINCT v.oid::regclass::text FROM pg_depend d
		  JOIN pg_rewrite w ON w.oid = d.objid JOIN pg_class v ON v.oid = w.ev_class
		 WHERE d.refobjid = (quote_ident($1) || '.stk_pushes')::regclass AND v.oid <> d.refobjid`, r.live); err != nil {
		return fmt.Errorf("rebuild: views: %w", err)
	}
	for _, v := range views {
		bad = append(bad, "view "+v+" reads the live table and would go on reading the old one")
	}
	if len(bad) > 0 {
		return fmt.Errorf("rebuild: the live table is not the one the migrations make, nothing changed:\n  %s", strings.Join(bad, "\n  "))
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
