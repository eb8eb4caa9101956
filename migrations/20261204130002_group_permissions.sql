-- Group conversations in the admin API: viewing groups and their messages, and dissolving groups
-- and redacting their messages. Super administrators hold every code; the day-to-day `admin`
-- role views.
INSERT INTO permissions (name, code, type, sort) VALUES
    ('群组查看', 'group:view', 'api', 42), ('群组管理', 'group:manage', 'api', 43)
ON CONFLICT (code) DO NOTHING;

INSERT INTO role_permissions (role_id, permission_id)
SELECT r.id, p.id FROM roles r, permissions p
WHERE r.code = 'super_admin' AND p.code IN ('group:view', 'group:manage')
ON CONFLICT DO NOTHING;
INSERT INTO role_permissions (role_id, permission_id)
SELECT r.id, p.id FROM roles r, permissions p
WHERE r.code = 'admin' AND p.code = 'group:view'
ON CONFLICT DO NOTHING;
