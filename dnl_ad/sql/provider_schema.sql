-- Provider database subset: the DNL Class 4 v5 tables dnl_ad reads or writes, with the
-- columns it touches (plus the keys tests need), each with the name and type it has in the
-- real v5 schema (shared/dnl_v5). Used to build the demo and the fast test databases; a
-- live switch already has all of it (dnl-ad check verifies the contract columns), and a
-- test compares this file with the v5 dump column by column.
--
-- Differences that do not touch a column's name or type: cdr_report_detail is a declarative
-- partitioned table here (v5: an inheritance parent whose BEFORE INSERT trigger routes rows
-- to daily children); the *_record change-feed triggers are not here.

DO $$ BEGIN
    -- the prefix extension's type on a live switch; dnl_ad only reads it as text
    CREATE DOMAIN prefix_range AS text;
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;

CREATE TABLE currency (
    currency_id serial PRIMARY KEY,
    code varchar(100) NOT NULL,
    active boolean NOT NULL DEFAULT true
);

CREATE TABLE payment_term (
    payment_term_id serial PRIMARY KEY,
    name varchar(100) NOT NULL,
    type integer NOT NULL DEFAULT 1,
    days integer NOT NULL DEFAULT 30
);

CREATE TABLE client (
    client_id serial PRIMARY KEY,
    name varchar(500),
    company varchar,
    status boolean NOT NULL DEFAULT true,
    mode integer NOT NULL DEFAULT 1,
    currency_id integer NOT NULL,
    allowed_credit numeric(30, 10) NOT NULL DEFAULT 0,
    unlimited_credit boolean DEFAULT false,
    payment_term_id integer,
    billing_email varchar,
    email varchar(100),
    noc_email varchar(100),
    is_daily_balance_notification boolean DEFAULT false,
    low_balance_notice boolean NOT NULL DEFAULT true,
    notify_client_balance numeric(30, 10) DEFAULT 0,
    zero_balance_notice boolean,
    zero_balance_notice_time integer DEFAULT 0,
    zero_balance_notice_last_sent timestamptz,
    last_lowbalance_time timestamptz,
    is_auto_summary boolean DEFAULT false,
    auto_summary_hour integer,
    auto_send_zone varchar DEFAULT '+00:00',
    auto_summary_period integer DEFAULT 24,
    auto_summary_group_by smallint DEFAULT 0,
    auto_summary_include_cdr boolean NOT NULL DEFAULT false,
    auto_summary_not_zero smallint DEFAULT 0,
    auto_daily_balance_recipient integer DEFAULT 0,
    is_auto_balance boolean DEFAULT false,
    numer_of_days_balance integer DEFAULT 1,
    daily_balance_send_time time,
    daily_balance_send_time_zone varchar(20),
    daily_cdr_generation boolean DEFAULT false,
    daily_cdr_generation_zone varchar DEFAULT '+00:00',
    daily_cdr_generation_type smallint DEFAULT 0,
    last_autoreport_time timestamptz,
    last_autobalance_time timestamptz,
    last_cdrdown_time timestamptz,
    daily_limit integer,
    hourly_limit integer,
    update_at timestamptz,
    update_by varchar
);

CREATE TABLE client_low_balance_config (
    client_id integer PRIMARY KEY,
    is_notify boolean,
    value_type integer,
    actual_notify_balance numeric(30, 2),
    percentage_notify_balance numeric(30, 2),
    send_time_type integer,
    daily_send_time integer,
    duplicate_days integer,
    send_to integer,
    duplicate_send_days integer NOT NULL DEFAULT 0,
    last_alert_time timestamptz,
    disable_trunks_days integer DEFAULT 5
);

CREATE TABLE c4_client_balance (
    id serial PRIMARY KEY,
    client_id varchar(100) NOT NULL,
    balance numeric(30, 6) NOT NULL DEFAULT 0,
    ingress_balance numeric(30, 6) NOT NULL DEFAULT 0,
    egress_balance numeric(30, 6) NOT NULL DEFAULT 0,
    create_time timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX c4_client_balance_client ON c4_client_balance (client_id);

CREATE TABLE balance_history_actual (
    id serial PRIMARY KEY,
    date date,
    client_id integer,
    actual_balance numeric(20, 5) NOT NULL,
    payment_received numeric(20, 5) NOT NULL DEFAULT 0,
    payment_sent numeric(20, 5) NOT NULL DEFAULT 0,
    unbilled_incoming_traffic numeric(20, 5) NOT NULL DEFAULT 0,
    unbilled_outgoing_traffic numeric(20, 5) NOT NULL DEFAULT 0
);
CREATE INDEX balance_history_actual_client_date ON balance_history_actual (client_id, date);

CREATE TABLE client_payment (
    client_payment_id serial PRIMARY KEY,
    payment_time timestamptz NOT NULL,
    amount numeric(20, 10) NOT NULL,
    result boolean NOT NULL DEFAULT true,
    client_id integer,
    approved boolean,
    current_balance numeric(30, 10) DEFAULT 0,
    payment_type integer DEFAULT 1
);

-- Hourly traffic aggregates. One child per UTC day (cdr_report_detailYYYYMMDD); queries
-- go to the parent with a report_time range and PostgreSQL prunes to the children.
CREATE TABLE cdr_report_detail (
    report_time timestamptz,
    duration integer,
    ingress_bill_time integer,
    ingress_call_cost numeric(15, 6),
    ingress_total_calls integer,
    not_zero_calls integer,
    ingress_success_calls integer,
    pdd bigint,
    ingress_client_id integer,
    ingress_id integer,
    ingress_country varchar(100),
    ingress_code_name varchar(100),
    ingress_code varchar(100),
    egress_client_id integer,
    egress_id integer,
    egress_country varchar(100),
    egress_code_name varchar(100),
    egress_code varchar(100),
    egress_bill_time integer,
    egress_call_cost numeric(15, 6),
    egress_total_calls integer,
    egress_success_calls integer
) PARTITION BY RANGE (report_time);
CREATE INDEX cdr_report_detail_ingress ON cdr_report_detail (ingress_client_id, report_time);
CREATE INDEX cdr_report_detail_egress ON cdr_report_detail (egress_client_id, report_time);

CREATE TABLE resource (
    resource_id serial PRIMARY KEY,
    name varchar(100),
    client_id integer,
    alias varchar(100) NOT NULL DEFAULT NULL,
    ingress boolean,
    egress boolean,
    active boolean NOT NULL DEFAULT true,
    disable_by_alert boolean DEFAULT false,
    update_at timestamptz DEFAULT now(),
    update_by varchar
);
CREATE INDEX resource_client ON resource (client_id);

CREATE TABLE resource_ip (
    resource_id integer NOT NULL,
    resource_ip_id serial PRIMARY KEY,
    ip varchar(50),
    port integer DEFAULT 5060
);
CREATE INDEX resource_ip_resource ON resource_ip (resource_id);

CREATE TABLE resource_prefix (
    id serial PRIMARY KEY,
    resource_id integer,
    tech_prefix prefix_range NOT NULL DEFAULT ''
);
CREATE INDEX resource_prefix_resource ON resource_prefix (resource_id);

CREATE TABLE rate_send_log (
    id serial PRIMARY KEY,
    status smallint NOT NULL DEFAULT 5,
    file varchar(500),
    create_time timestamptz,
    effective_date varchar(50),
    download_deadline date,
    is_email_alert boolean NOT NULL DEFAULT false,
    is_disable boolean NOT NULL DEFAULT false,
    download_method integer DEFAULT 1
);

CREATE TABLE rate_send_log_detail (
    id serial PRIMARY KEY,
    log_id integer,
    resource_id integer,
    send_to varchar(100),
    status integer,
    error text,
    download_date date,
    sent_on timestamptz
);
CREATE INDEX rate_send_log_detail_resource ON rate_send_log_detail (resource_id);
CREATE INDEX rate_send_log_detail_log ON rate_send_log_detail (log_id);

CREATE TABLE rate_download_log (
    id serial PRIMARY KEY,
    resource_id integer,
    file_path varchar,
    download_time timestamptz,
    download_ip varchar,
    log_detail_id integer
);
CREATE INDEX rate_download_log_send ON rate_download_log (log_detail_id, resource_id);

-- The one row of templates (v5 has no download_rate_notice_cc nor no_download_rate_cc).
CREATE TABLE mail_tmplate (
    id serial PRIMARY KEY,
    lowbalance_subject text,
    lowbalance_content text,
    lowbalance_from varchar,
    lowbalance_cc text,
    auto_summary_subject varchar,
    auto_summary_content text,
    auto_summary_from varchar,
    auto_summary_cc text,
    auto_balance_subject varchar,
    auto_balance_content text,
    auto_balance_from varchar,
    auto_balance_cc text,
    auto_cdr_subject varchar(255),
    auto_cdr_content text,
    auto_cdr_from varchar,
    auto_cdr_cc text,
    fraud_detection_from varchar(50),
    fraud_detection_subject text,
    fraud_detection_content text,
    download_rate_notice_from varchar(50),
    download_rate_notice_subject text,
    download_rate_notice_content text,
    no_download_rate_from text,
    no_download_rate_subject text,
    no_download_rate_content text,
    zerobalance_content text,
    zerobalance_from text,
    zerobalance_cc text,
    zerobalance_subject text,
    pending_trunk_content text,
    pending_trunk_cc text,
    pending_trunk_subject varchar,
    pending_trunk_from varchar,
    hour_from_48 text,
    hour_subject_48 text,
    hour_content_48 text,
    hour_cc_48 text,
    hour_from_24 text,
    hour_subject_24 text,
    hour_content_24 text,
    hour_cc_24 text,
    hour_from_3 text,
    hour_subject_3 text,
    hour_content_3 text,
    hour_cc_3 text,
    hour_from_1 text,
    hour_subject_1 text,
    hour_content_1 text,
    hour_cc_1 text
);

CREATE TABLE mail_sender (
    id serial PRIMARY KEY,
    smtp_host varchar(255),
    smtp_port varchar(255),
    username varchar(255),
    password varchar(255),
    email varchar(255),
    name varchar(255),
    secure integer NOT NULL DEFAULT 0,
    loginemail varchar(12)
);

-- One row; its key is sys_id (there is no id column).
CREATE TABLE system_parameter (
    sys_id integer PRIMARY KEY,
    sys_timezone varchar(20),
    smtphost varchar(50),
    smtpport varchar(50),
    emailusername varchar(50),
    emailpassword varchar(50),
    fromemail varchar(50),
    emailname varchar(50),
    loginemail varchar(12),
    system_admin_email varchar(1000),
    switch_ip varchar(20),
    noc_email varchar(1000),
    finance_email varchar(1000),
    smtp_secure integer DEFAULT 0,
    switch_alias varchar(255)
);

CREATE TABLE email_log (
    id serial PRIMARY KEY,
    send_time timestamptz,
    client_id integer,
    email_addresses varchar(500),
    files varchar(500),
    type smallint,
    email_res text,
    alert_block_egress_id integer,
    alert_block_code_name text,
    status smallint,
    error text,
    subject varchar(100),
    content text,
    is_view integer NOT NULL DEFAULT 0,
    alert_rule varchar(500)
);

CREATE TABLE modif_log (
    id serial PRIMARY KEY,
    time timestamptz DEFAULT now(),
    module varchar(100),
    type smallint,
    name varchar(100),
    detail text,
    rollback text,
    rollback_msg varchar(500),
    rollback_flg smallint,
    rollback_extra_info text
);

CREATE TABLE version_information (
    id serial PRIMARY KEY,
    program_name varchar(50),
    major_ver varchar(100),
    minor_ver varchar(100),
    build_date varchar(11),
    start_time timestamptz
);

-- v5: the columns of the daily CDR file ("Auto CDR Generation Format"); type 0 ingress,
-- 1 egress (2/3 are portal fields). dnl_ad sends a direction's ids, in id order, to the
-- CDR API and uses their labels for the static link.
CREATE TABLE daily_cdr_fields (
    id serial PRIMARY KEY,
    type smallint,
    field varchar,
    label varchar
);

-- The UI's inbox of operator alerts (v5 types). type 1-5 are the UI's own; dnl_ad writes
-- 6 (dnl_ad.operator_alerts: a job failing, notices given up, a suspension not written,
-- and their recovery).
CREATE TABLE admin_alert (
    id serial NOT NULL,
    type integer NOT NULL,
    subject varchar(100),
    content text,
    is_view integer NOT NULL DEFAULT 0,
    create_time timestamptz,
    view_time timestamptz,
    view_by varchar(100)
);
