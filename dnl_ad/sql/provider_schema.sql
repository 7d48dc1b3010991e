-- Provider database subset: the tables and columns of shared/PROVIDER_DB.md, as a DNL
-- Class 4 switch has them. Used to build test and demo databases; a live provider
-- database already has these (dnl-ad check verifies it). Idempotent where cheap.

CREATE TABLE payment_term (
    payment_term_id serial PRIMARY KEY,
    name varchar(100) NOT NULL
);

CREATE TABLE client (
    client_id serial PRIMARY KEY,
    name varchar(500) NOT NULL,
    company varchar(500),
    status boolean NOT NULL DEFAULT true,
    mode integer NOT NULL DEFAULT 1,
    allowed_credit numeric(30, 6) NOT NULL DEFAULT 0,
    unlimited_credit boolean NOT NULL DEFAULT false,
    payment_term_id integer REFERENCES payment_term (payment_term_id),
    billing_email varchar(1000),
    low_balance_notice boolean NOT NULL DEFAULT false,
    notify_client_balance numeric(30, 6),
    last_lowbalance_time timestamptz,
    zero_balance_notice boolean NOT NULL DEFAULT false,
    zero_balance_notice_time integer NOT NULL DEFAULT 0,
    zero_balance_notice_last_sent timestamptz,
    is_auto_summary boolean NOT NULL DEFAULT false,
    auto_summary_not_zero boolean NOT NULL DEFAULT false,
    auto_summary_hour integer,
    auto_send_zone varchar(50),
    daily_balance_send_time_zone varchar(50),
    is_daily_balance_notification boolean NOT NULL DEFAULT false,
    daily_cdr_generation boolean NOT NULL DEFAULT false
);

CREATE TABLE client_low_balance_config (
    client_id integer PRIMARY KEY,
    value_type integer NOT NULL DEFAULT 0,
    actual_notify_balance numeric(30, 6),
    percentage_notify_balance numeric(30, 6),
    duplicate_days integer,
    last_alert_time timestamptz
);

CREATE TABLE c4_client_balance (
    client_id varchar(100) PRIMARY KEY,
    balance double precision
);

CREATE TABLE balance_history_actual (
    id serial PRIMARY KEY,
    client_id integer NOT NULL,
    date date NOT NULL,
    actual_balance numeric(30, 6),
    unbilled_incoming_traffic numeric(30, 6),
    unbilled_outgoing_traffic numeric(30, 6)
);
CREATE INDEX balance_history_actual_client_date ON balance_history_actual (client_id, date);

-- Hourly traffic aggregates. One child per UTC day (cdr_report_detailYYYYMMDD); queries
-- go to the parent with a report_time range and PostgreSQL prunes to the children.
CREATE TABLE cdr_report_detail (
    report_time timestamptz NOT NULL,
    ingress_client_id integer,
    ingress_id integer,
    egress_client_id integer,
    egress_id integer,
    ingress_total_calls integer NOT NULL DEFAULT 0,
    ingress_success_calls integer NOT NULL DEFAULT 0,
    egress_total_calls integer NOT NULL DEFAULT 0,
    egress_success_calls integer NOT NULL DEFAULT 0,
    not_zero_calls integer NOT NULL DEFAULT 0,
    duration numeric(30, 6) NOT NULL DEFAULT 0,
    ingress_bill_time numeric(30, 6) NOT NULL DEFAULT 0,
    egress_bill_time numeric(30, 6) NOT NULL DEFAULT 0,
    ingress_call_cost numeric(30, 6) NOT NULL DEFAULT 0,
    egress_call_cost numeric(30, 6) NOT NULL DEFAULT 0
) PARTITION BY RANGE (report_time);
CREATE INDEX cdr_report_detail_ingress ON cdr_report_detail (ingress_client_id, report_time);
CREATE INDEX cdr_report_detail_egress ON cdr_report_detail (egress_client_id, report_time);

CREATE TABLE resource (
    resource_id serial PRIMARY KEY,
    client_id integer NOT NULL,
    alias varchar(500),
    active boolean NOT NULL DEFAULT true,
    ingress boolean NOT NULL DEFAULT false,
    egress boolean NOT NULL DEFAULT false,
    disable_by_alert boolean NOT NULL DEFAULT false,
    update_at timestamptz,
    update_by varchar(100)
);
CREATE INDEX resource_client ON resource (client_id);

CREATE TABLE resource_ip (
    resource_ip_id serial PRIMARY KEY,
    resource_id integer NOT NULL,
    ip varchar(100)
);
CREATE INDEX resource_ip_resource ON resource_ip (resource_id);

CREATE TABLE resource_prefix (
    id serial PRIMARY KEY,
    resource_id integer NOT NULL,
    tech_prefix varchar(100)
);
CREATE INDEX resource_prefix_resource ON resource_prefix (resource_id);

CREATE TABLE rate_send_log (
    id serial PRIMARY KEY,
    file varchar(1000),
    download_deadline timestamptz,
    is_email_alert boolean NOT NULL DEFAULT false,
    create_time timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE rate_send_log_detail (
    id serial PRIMARY KEY,
    log_id integer NOT NULL,
    resource_id integer NOT NULL,
    status boolean NOT NULL DEFAULT true,
    download_date timestamptz,
    error text
);
CREATE INDEX rate_send_log_detail_resource ON rate_send_log_detail (resource_id);
CREATE INDEX rate_send_log_detail_log ON rate_send_log_detail (log_id);

CREATE TABLE rate_download_log (
    id serial PRIMARY KEY,
    client_id integer,
    log_detail_id integer,
    download_time timestamptz,
    download_ip varchar(100)
);
CREATE INDEX rate_download_log_detail ON rate_download_log (log_detail_id);

CREATE TABLE mail_tmplate (
    id serial PRIMARY KEY,
    lowbalance_from varchar(100),
    lowbalance_subject varchar(500),
    lowbalance_content text,
    lowbalance_cc varchar(500),
    zerobalance_from varchar(100),
    zerobalance_subject varchar(500),
    zerobalance_content text,
    zerobalance_cc varchar(500),
    auto_summary_from varchar(100),
    auto_summary_subject varchar(500),
    auto_summary_content text,
    auto_summary_cc varchar(500),
    auto_balance_from varchar(100),
    auto_balance_subject varchar(500),
    auto_balance_content text,
    auto_balance_cc varchar(500),
    auto_cdr_from varchar(100),
    auto_cdr_subject varchar(500),
    auto_cdr_content text,
    auto_cdr_cc varchar(500),
    download_rate_notice_from varchar(100),
    download_rate_notice_subject varchar(500),
    download_rate_notice_content text,
    download_rate_notice_cc varchar(500),
    no_download_rate_from varchar(100),
    no_download_rate_subject varchar(500),
    no_download_rate_content text,
    no_download_rate_cc varchar(500),
    pending_trunk_from varchar(100),
    pending_trunk_subject varchar(500),
    pending_trunk_content text,
    pending_trunk_cc varchar(500),
    hour_from_48 varchar(100),
    hour_subject_48 varchar(500),
    hour_content_48 text,
    hour_cc_48 varchar(500),
    hour_from_24 varchar(100),
    hour_subject_24 varchar(500),
    hour_content_24 text,
    hour_cc_24 varchar(500),
    hour_from_3 varchar(100),
    hour_subject_3 varchar(500),
    hour_content_3 text,
    hour_cc_3 varchar(500),
    hour_from_1 varchar(100),
    hour_subject_1 varchar(500),
    hour_content_1 text,
    hour_cc_1 varchar(500)
);

CREATE TABLE mail_sender (
    id serial PRIMARY KEY,
    email varchar(200) NOT NULL,
    smtp_host varchar(200),
    smtp_port integer,
    username varchar(200),
    password varchar(200),
    secure varchar(10)
);

CREATE TABLE system_parameter (
    id serial PRIMARY KEY,
    sys_timezone varchar(50),
    fromemail varchar(200),
    smtphost varchar(200),
    smtpport integer,
    emailusername varchar(200),
    emailpassword varchar(200),
    finance_email varchar(500),
    smtp_secure varchar(10)
);

CREATE TABLE email_log (
    id serial PRIMARY KEY,
    send_time timestamptz,
    client_id integer,
    email_addresses varchar(500),
    files varchar(500),
    type smallint,
    email_res text,
    status smallint,
    error text,
    subject varchar(100),
    content text,
    is_view integer DEFAULT 0,
    alert_rule varchar(500)
);

CREATE TABLE modif_log (
    id serial PRIMARY KEY,
    time timestamptz,
    module varchar(100),
    type integer,
    name varchar(100),
    detail text,
    rollback text,
    rollback_msg text,
    rollback_flg integer,
    rollback_extra_info text
);

CREATE TABLE version_information (
    id serial PRIMARY KEY,
    program_name varchar(100),
    major_ver varchar(20),
    minor_ver varchar(20),
    build_date varchar(50),
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
