-- Scoped API keys: the permission codes a key may carry beyond the contract's (reconcile and
-- replay over the API, managing keys), granted to `super_admin` like every code; and the audit
-- log naming the key that acted (`api_key_id`, `api_key_name`; NULL / '' for an administrator).
INSERT INTO permissions (name, code, type, sort) VALUES
    ('财务对账', 'finance:reconcile', 'api', 52),
    ('审计重放', 'audit:replay', 'api', 64),
    ('API密钥管理', 'apikey:manage', 'api', 65)
ON CONFLICT (code) DO NOTHING;

INSERT INTO role_permissions (role_id, permission_id)
SELECT r.id, p.id FROM roles r, permissions p
WHERE r.code = 'super_admin' AND p.code IN ('finance:reconcile', 'audit:replay', 'apikey:manage')
ON CONFLICT DO NOTHING;

ALTER TABLE admin_logs
    ADD COLUMN api_key_id   BIGINT,
    ADD COLUMN api_key_name TEXT NOT NULL DEFAULT '';
