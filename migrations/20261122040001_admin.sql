-- Issue 4: the admin back office's reference data: RBAC (roles, permissions, menus), the audit
-- log, system configs, counselor applications, uploads, low-code forms/pages, user mutes.

CREATE TABLE roles (
    id          BIGSERIAL PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    code        TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    sort        INT NOT NULL DEFAULT 0,
    status      SMALLINT NOT NULL DEFAULT 1,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE permissions (
    id          BIGSERIAL PRIMARY KEY,
    parent_id   BIGINT NOT NULL DEFAULT 0,
    name        TEXT NOT NULL,
    code        TEXT NOT NULL UNIQUE,
    type        TEXT NOT NULL DEFAULT 'api',
    path        TEXT NOT NULL DEFAULT '',
    icon        TEXT NOT NULL DEFAULT '',
    component   TEXT NOT NULL DEFAULT '',
    sort        INT NOT NULL DEFAULT 0,
    status      SMALLINT NOT NULL DEFAULT 1,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE role_permissions (
    role_id       BIGINT NOT NULL REFERENCES roles(id) ON DELETE CASCADE,
    permission_id BIGINT NOT NULL REFERENCES permissions(id) ON DELETE CASCADE,
    PRIMARY KEY (role_id, permission_id)
);

CREATE TABLE menus (
    id          BIGSERIAL PRIMARY KEY,
    parent_id   BIGINT REFERENCES menus(id),
    name        TEXT NOT NULL,
    type        SMALLINT NOT NULL DEFAULT 2,
    path        TEXT NOT NULL DEFAULT '',
    component   TEXT NOT NULL DEFAULT '',
    permission  TEXT NOT NULL DEFAULT '',
    icon        TEXT NOT NULL DEFAULT '',
    sort        INT NOT NULL DEFAULT 0,
    status      SMALLINT NOT NULL DEFAULT 1,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The audit log: one row per admin change (reference data and commands).
CREATE TABLE admin_logs (
    id           BIGSERIAL PRIMARY KEY,
    admin_id     BIGINT NOT NULL,
    operator     TEXT NOT NULL,
    action       TEXT NOT NULL,
    module       TEXT NOT NULL,
    target       TEXT NOT NULL DEFAULT '',
    description  TEXT NOT NULL DEFAULT '',
    ip_address   TEXT NOT NULL DEFAULT '',
    user_agent   TEXT NOT NULL DEFAULT '',
    request_data TEXT NOT NULL DEFAULT '',
    status       INT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX admin_logs_created ON admin_logs (created_at DESC);

CREATE TABLE system_configs (
    id         BIGSERIAL PRIMARY KEY,
    key        TEXT NOT NULL UNIQUE,
    value      TEXT NOT NULL DEFAULT '',
    category   TEXT NOT NULL DEFAULT 'basic',
    label      TEXT NOT NULL DEFAULT '',
    type       TEXT NOT NULL DEFAULT 'string',
    is_system  BOOLEAN NOT NULL DEFAULT FALSE,
    sort       INT NOT NULL DEFAULT 0,
    remark     TEXT NOT NULL DEFAULT '',
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Counselor applications (the user API's issue may create it first: same columns).
CREATE TABLE IF NOT EXISTS counselor_applications (
    id               BIGSERIAL PRIMARY KEY,
    user_id          BIGINT NOT NULL DEFAULT 0,
    name             TEXT NOT NULL,
    gender           TEXT NOT NULL DEFAULT '',
    phone            TEXT NOT NULL DEFAULT '',
    email            TEXT NOT NULL DEFAULT '',
    title            TEXT NOT NULL DEFAULT '',
    years_exp        INT NOT NULL DEFAULT 0,
    specialty        TEXT NOT NULL DEFAULT '',
    bio              TEXT NOT NULL DEFAULT '',
    certificate_img1 TEXT NOT NULL DEFAULT '',
    certificate_img2 TEXT NOT NULL DEFAULT '',
    certificate_img3 TEXT NOT NULL DEFAULT '',
    status           SMALLINT NOT NULL DEFAULT 0,
    reject_reason    TEXT NOT NULL DEFAULT '',
    reviewed_by      BIGINT,
    reviewed_at      TIMESTAMPTZ,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Admin uploads, stored in Postgres so that every admin node serves them.
CREATE TABLE admin_uploads (
    id         BIGSERIAL PRIMARY KEY,
    admin_id   BIGINT,
    file_name  TEXT NOT NULL,
    mime_type  TEXT NOT NULL,
    bytes      BYTEA NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE lowcode_forms (
    id          BIGSERIAL PRIMARY KEY,
    title       TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    form_json   TEXT NOT NULL DEFAULT '[]',
    status      SMALLINT NOT NULL DEFAULT 1,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE lowcode_form_data (
    id         BIGSERIAL PRIMARY KEY,
    form_id    BIGINT NOT NULL REFERENCES lowcode_forms(id) ON DELETE CASCADE,
    form_data  TEXT NOT NULL,
    created_by BIGINT NOT NULL DEFAULT 0,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE lowcode_pages (
    id          BIGSERIAL PRIMARY KEY,
    title       TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    path        TEXT NOT NULL DEFAULT '',
    page_json   TEXT NOT NULL DEFAULT '[]',
    status      SMALLINT NOT NULL DEFAULT 1,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Users muted by an administrator (the gateways also hold the set in memory, via NATS).
CREATE TABLE user_mutes (
    user_id    BIGINT PRIMARY KEY,
    admin_id   BIGINT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Seed: roles and the contract's c.9 permission codes.
INSERT INTO roles (name, code, description, sort) VALUES
    ('超级管理员', 'super_admin', 'every permission', 1),
    ('管理员', 'admin', 'day-to-day operations', 2);

INSERT INTO permissions (name, code, type, sort) VALUES
    ('仪表盘', 'dashboard:view', 'api', 1),
    ('用户查看', 'user:view', 'api', 10), ('用户新增', 'user:add', 'api', 11),
    ('用户编辑', 'user:edit', 'api', 12), ('用户删除', 'user:delete', 'api', 13),
    ('用户重置密码', 'user:reset_password', 'api', 14),
    ('咨询师查看', 'counselor:view', 'api', 20), ('咨询师新增', 'counselor:add', 'api', 21),
    ('咨询师编辑', 'counselor:edit', 'api', 22), ('咨询师删除', 'counselor:delete', 'api', 23),
    ('订单查看', 'order:view', 'api', 30), ('订单状态', 'order:edit_status', 'api', 31),
    ('订单统计', 'order:view_statistics', 'api', 32),
    ('聊天查看', 'chat:view', 'api', 40), ('聊天管理', 'chat:manage', 'api', 41),
    ('财务查看', 'finance:view', 'api', 50), ('提现审核', 'finance:approve_withdraw', 'api', 51),
    ('系统查看', 'system:view', 'api', 60), ('系统配置', 'system:edit_config', 'api', 61),
    ('系统日志', 'system:view_logs', 'api', 62), ('在线管理', 'system:manage_online', 'api', 63),
    ('管理员查看', 'admin:view', 'api', 70), ('管理员新增', 'admin:add', 'api', 71),
    ('管理员编辑', 'admin:edit', 'api', 72), ('管理员删除', 'admin:delete', 'api', 73),
    ('管理员重置密码', 'admin:reset_password', 'api', 74),
    ('角色查看', 'role:view', 'api', 80), ('角色新增', 'role:add', 'api', 81),
    ('角色编辑', 'role:edit', 'api', 82), ('角色删除', 'role:delete', 'api', 83),
    ('权限查看', 'permission:view', 'api', 90), ('权限新增', 'permission:add', 'api', 91),
    ('权限编辑', 'permission:edit', 'api', 92), ('权限删除', 'permission:delete', 'api', 93),
    ('菜单查看', 'menu:view', 'api', 100), ('菜单新增', 'menu:add', 'api', 101),
    ('菜单编辑', 'menu:edit', 'api', 102), ('菜单删除', 'menu:delete', 'api', 103),
    ('表单设计', 'lowcode:form:design', 'menu', 110), ('页面设计', 'lowcode:page:design', 'menu', 111),
    ('数据管理', 'lowcode:data:manage', 'menu', 112), ('日志列表', 'system:log:list', 'menu', 113);

INSERT INTO role_permissions (role_id, permission_id)
SELECT r.id, p.id FROM roles r, permissions p WHERE r.code = 'super_admin';
INSERT INTO role_permissions (role_id, permission_id)
SELECT r.id, p.id FROM roles r, permissions p WHERE r.code = 'admin' AND p.code IN (
    'dashboard:view', 'user:view', 'counselor:view', 'counselor:edit', 'order:view',
    'order:edit_status', 'chat:view', 'finance:view', 'system:view',
    'lowcode:form:design', 'lowcode:page:design', 'lowcode:data:manage', 'system:log:list');

INSERT INTO system_configs (key, value, category, label, type, is_system, sort) VALUES
    ('basic.system_name', '"MyChat"', 'basic', '系统名称', 'string', TRUE, 1),
    ('chat.billing_cycle', '60', 'chat', '计费周期(秒)', 'number', TRUE, 2),
    ('chat.session_timeout', '30', 'chat', '会话超时(分钟)', 'number', TRUE, 3),
    ('chat.free_chat_duration', '5', 'chat', '免费时长(分钟)', 'number', TRUE, 4);
