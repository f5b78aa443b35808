"""Settings from the environment: every bad value named on a line of its own."""

from __future__ import annotations

import base64

import pytest

from flows.pii import _DEV_KEYS, generate_keys
from flows.providers import DEV_CALLBACK_SECRET
from web.settings import Settings, SettingsError, is_loopback


def problems(env: dict[str, str]) -> list[str]:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    return caught.value.problems


def production_env(**extra: str) -> dict[str, str]:
    """A complete production configuration: real-looking keys, providers over HTTP."""
    keys = generate_keys()
    env = {"ENVIRONMENT": "production", "DATABASE_URL": "postgresql://db.internal/flows",
           "REDIS_URL": "rediss://redis.internal:6380/0", "PII_ENC_KEY": keys["enc_key_b64"],
           "PII_INDEX_KEY": keys["index_key_b64"], "PUBLIC_URL": "https://id.example.gov.cn",
           "CALLBACK_SECRET": "a-callback-secret-of-our-own-0123"}
    for p in ("SMS", "REALNAME", "FACE", "PAYMENT"):
        env.update({f"{p}_PROVIDER": "http", f"{p}_URL": f"https://{p.lower()}.example",
                    f"{p}_API_KEY": "key"})
    return {**env, **extra}


DEV_ENC_KEY, DEV_INDEX_KEY = (base64.b64encode(k).decode() for k in _DEV_KEYS)


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("PORT", "abc", "PORT must be a whole number from 1 to 65535, not 'abc'"),
    ("PORT", "70000", "PORT must be a whole number from 1 to 65535, not '70000'"),
    ("SERVE_WORKERS", "two", "SERVE_WORKERS must be a whole number from 1 to 256, not 'two'"),
    ("SERVE_WORKERS", "0", "SERVE_WORKERS must be a whole number from 1 to 256, not '0'"),
    ("MAX_BODY_BYTES", "1e6", "MAX_BODY_BYTES must be a whole number"),
    ("DB_POOL_MAX", "-1", "DB_POOL_MAX must be a whole number from 1 to 1000"),
    ("ARGON2_TIME_COST", "0", "ARGON2_TIME_COST must be a whole number from 1 to 100"),
    ("ARGON2_MEMORY_KIB", "lots", "ARGON2_MEMORY_KIB must be a whole number"),
    ("LOG_FORMAT", "xml", "LOG_FORMAT must be one of auto, json, console, not 'xml'"),
    ("LOG_LEVEL", "loud", "LOG_LEVEL must be one of debug, info, warning, error, critical"),
    ("ENVIRONMENT", "prod", "ENVIRONMENT must be one of development, production, not 'prod'"),
    ("COOKIE_SECURE", "maybe", "COOKIE_SECURE must be true or false"),
    ("WORKERS", "2", "WORKERS must be true or false"),
    ("TIMER_INTERVAL", "0", "TIMER_INTERVAL must be a number of seconds more than 0"),
    ("OUTBOX_INTERVAL", "soon", "OUTBOX_INTERVAL must be a number of seconds"),
    ("SESSION_HOURS", "nan", "SESSION_HOURS must be a number of hours"),
    ("SESSION_HOURS", "-8", "SESSION_HOURS must be a number of hours"),
    ("TRUSTED_PROXIES", "10.0.0.0/8,proxy.local", "TRUSTED_PROXIES must be comma-separated"),
    ("TRUSTED_PROXIES", "10.0.0.1/8", "TRUSTED_PROXIES must be comma-separated"),
    ("TRUSTED_PROXY_HEADER", "X Forwarded For", "TRUSTED_PROXY_HEADER must be an HTTP header"),
    ("FLOW_MODULES", "flows,my-module", "FLOW_MODULES must be comma-separated Python module"),
    ("DATABASE_URL", "mysql://root:hunter2@db/flows", "DATABASE_URL must be a URL starting "
                                                      "with postgresql:// or postgres://"),
    ("REDIS_URL", "localhost:6379", "REDIS_URL must be a URL starting with redis://"),
    ("PUBLIC_URL", "id.example.gov.cn", "PUBLIC_URL must be a URL starting with http://"),
    ("PUBLIC_URL", "https://:443", "PUBLIC_URL must be a URL"),
    ("PII_ENC_KEY", "not-a-key", "PII_ENC_KEY must be base64 of 32 random bytes"),
    ("PII_PREVIOUS_KEYS", "AAAA", "PII_PREVIOUS_KEYS must be comma-separated keys"),
    ("METRICS_PORT", "metrics", "METRICS_PORT must be a whole number from 1 to 65535"),
    ("SMS_PROVIDER", "smtp", "SMS_PROVIDER must be one of http, sandbox, not 'smtp'"),
    ("SMS_PROVIDER", "http", "SMS_URL must be an http(s) URL when SMS_PROVIDER=http"),
    ("CALLBACK_TOLERANCE", "-1", "CALLBACK_TOLERANCE must be from 0 to 604800 seconds"),
    ("BRANCHES_FILE", "/nonexistent/branches.csv", "BRANCHES_FILE must be a readable CSV"),
])
def test_a_bad_setting_is_one_line_naming_the_variable_and_what_is_expected(
        name: str, value: str, expected: str) -> None:
    found = problems({name: value})
    assert len(found) == 1, found
    assert found[0].startswith(expected), found


def test_secrets_and_urls_with_passwords_are_not_repeated_in_the_message() -> None:
    found = problems({"DATABASE_URL": "mysql://root:hunter2@db/flows",
                      "PII_ENC_KEY": "c2VjcmV0LWJ1dC10b28tc2hvcnQ="})
    assert len(found) == 2
    assert not any("hunter2" in p or "c2VjcmV0" in p for p in found)


def test_every_bad_variable_is_named_at_once() -> None:
    found = problems({"PORT": "abc", "SERVE_WORKERS": "two", "LOG_FORMAT": "xml",
                      "COOKIE_SECURE": "maybe"})
    assert [p.split()[0] for p in found] == ["PORT", "LOG_FORMAT", "SERVE_WORKERS",
                                             "COOKIE_SECURE"]


def test_good_values_are_read_and_blank_ones_mean_the_default() -> None:
    s = Settings.from_env({"PORT": "9000", "SERVE_WORKERS": " 4 ", "LOG_FORMAT": "JSON",
                           "COOKIE_SECURE": "yes", "WORKERS": "off", "TIMER_INTERVAL": "0.25",
                           "TRUSTED_PROXIES": "10.0.0.0/8, fd00::/8", "MAX_BODY_BYTES": "",
                           "DATABASE_URL": "postgresql:///flows?host=/run/postgresql",
                           "REDIS_URL": "unix:///run/redis.sock", "METRICS_PORT": "9100"})
    assert (s.port, s.serve_workers, s.log_format, s.cookie_secure, s.workers) == (
        9000, 4, "json", True, False)
    assert s.timer_interval == 0.25
    assert s.trusted_proxies == ("10.0.0.0/8", "fd00::/8")
    assert s.max_body_bytes == 1024 * 1024
    assert s.metrics_port == 9100
    assert Settings.from_env({}) == Settings()


def test_settings_that_only_clash_together_are_refused() -> None:
    assert problems({"DB_POOL_MIN": "20", "DB_POOL_MAX": "10"}) == [
        "DB_POOL_MIN (20) must not be more than DB_POOL_MAX (10)"]
    assert problems({"PORT": "9000", "METRICS_PORT": "9000"}) == [
        "METRICS_PORT must differ from PORT (9000)"]
    assert problems({"METRICS_TOKEN": "short"})[0].startswith(
        "METRICS_TOKEN must have at least 16 characters")
    assert problems({"PII_ENC_KEY": generate_keys()["enc_key_b64"]}) == [
        "PII_INDEX_KEY must be set with PII_ENC_KEY (flowctl keys prints a pair)"]


def test_transaction_pooling_sends_no_statement_timeout_and_refuses_one_given() -> None:
    pooled = Settings.from_env({"DB_TRANSACTION_POOLING": "true"})
    assert (pooled.db_transaction_pooling, pooled.db_statement_timeout) == (True, 0.0)
    assert Settings.from_env({"DB_TRANSACTION_POOLING": "true",
                              "DB_STATEMENT_TIMEOUT": "0"}).db_statement_timeout == 0.0
    assert Settings.from_env({}).db_statement_timeout == 3.0
    [problem] = problems({"DB_TRANSACTION_POOLING": "yes", "DB_STATEMENT_TIMEOUT": "3"})
    assert problem.startswith("DB_STATEMENT_TIMEOUT must be 0 with DB_TRANSACTION_POOLING")
    assert "ALTER ROLE" in problem


def test_a_redis_cluster_is_named_by_one_node_and_a_flag() -> None:
    s = Settings.from_env({"REDIS_URL": "redis://10.0.0.5:7000/0", "REDIS_CLUSTER": "on"})
    assert (s.redis_url, s.redis_cluster) == ("redis://10.0.0.5:7000/0", True)
    assert Settings.from_env({}).redis_cluster is False
    assert problems({"REDIS_CLUSTER": "maybe"}) == [
        "REDIS_CLUSTER must be true or false (also 1/0, yes/no, on/off), not 'maybe'"]


def test_redis_sentinel_is_named_by_its_sentinels_and_the_master_they_watch() -> None:
    s = Settings.from_env({"REDIS_URL": "redis://:pw@flows/2",
                           "REDIS_SENTINELS":
                               " 10.0.3.21:26379, [fd00::22]:26380 ,sentinel-c:26379",
                           "REDIS_SENTINEL_MASTER": "flows"})
    assert s.redis_sentinels == (("10.0.3.21", 26379), ("fd00::22", 26380),
                                 ("sentinel-c", 26379))
    assert s.redis_topology() == {"cluster": False, "sentinels": s.redis_sentinels,
                                  "sentinel_master": "flows"}
    assert Settings.from_env({}).redis_topology() == {
        "cluster": False, "sentinels": (), "sentinel_master": "mymaster"}
    expected = ("REDIS_SENTINELS must be comma-separated host:port addresses "
                "(e.g. 10.0.3.21:26379, [fd00::21]:26379)")
    for bad in ("10.0.3.21", "10.0.3.21:0", "fd00::22:26379", "a:1,,b", ":26379",
                "10.0.3.21:26379/x", "a b:1"):
        assert problems({"REDIS_URL": "redis://flows/0", "REDIS_SENTINELS": bad}) == [
            f"{expected}, not {bad!r}"], bad
    assert problems({"REDIS_URL": "redis://h/0", "REDIS_CLUSTER": "true",
                     "REDIS_SENTINELS": "h:26379"}) == [
        "REDIS_CLUSTER and REDIS_SENTINELS exclude each other: a Redis Cluster fails over "
        "by itself, Sentinel watches one master"]
    [problem] = problems({"REDIS_SENTINELS": "h:26379"})
    assert problem.startswith("REDIS_URL must be set with REDIS_SENTINELS")


def test_a_real_face_provider_needs_its_url_and_a_callback_secret() -> None:
    assert problems({"FACE_PROVIDER": "http", "FACE_API_KEY": "k"}) == [
        "FACE_URL must be an http(s) URL when FACE_PROVIDER=http",
        "CALLBACK_SECRET must be set when FACE_PROVIDER or PAYMENT_PROVIDER is http"]


def test_a_complete_production_configuration_is_accepted() -> None:
    settings = Settings.from_env(production_env())
    assert settings.production
    assert settings.secure_cookies
    assert not settings.metrics_public  # neither a token nor a port


@pytest.mark.parametrize(("name", "value"), [
    ("PII_ENC_KEY", DEV_ENC_KEY),
    ("PII_INDEX_KEY", DEV_INDEX_KEY),
    ("PII_ENC_KEY", DEV_INDEX_KEY),  # swapped: still a key anyone can recompute
    ("PII_PREVIOUS_KEYS", f"{generate_keys()['enc_key_b64']},{DEV_ENC_KEY}"),
    # URL-safe and unpadded spellings of the same bytes are the same key.
    ("PII_ENC_KEY", DEV_ENC_KEY.replace("+", "-").replace("/", "_").rstrip("=")),
], ids=["enc", "index", "enc-swapped", "previous", "enc-url-safe"])
def test_production_refuses_the_development_pii_keys_given_explicitly(
        name: str, value: str) -> None:
    assert problems(production_env(**{name: value})) == [
        f"{name} is a development key, which anyone can recompute: set one of your own in "
        "production (flowctl keys)"]


@pytest.mark.parametrize("name", ["CALLBACK_SECRET", "CALLBACK_PREVIOUS_SECRETS"])
def test_production_refuses_the_development_callback_secret(name: str) -> None:
    found = problems(production_env(**{name: DEV_CALLBACK_SECRET}))
    assert found == [f"{name} is the development callback secret, which anyone can read in "
                     "the source: set a secret of your own"]


def test_development_accepts_the_development_keys() -> None:
    s = Settings.from_env({"PII_ENC_KEY": DEV_ENC_KEY, "PII_INDEX_KEY": DEV_INDEX_KEY,
                           "CALLBACK_SECRET": DEV_CALLBACK_SECRET})
    assert not s.production


def test_production_names_everything_it_still_needs() -> None:
    found = problems({"ENVIRONMENT": "production", "PUBLIC_URL": "http://id.example.gov.cn"})
    assert [p.split()[0] for p in found] == [
        "DATABASE_URL", "REDIS_URL", "PII_ENC_KEY", "PII_INDEX_KEY", "SMS_PROVIDER",
        "REALNAME_PROVIDER", "FACE_PROVIDER", "PAYMENT_PROVIDER", "PUBLIC_URL"]


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.8.0.1", True), ("::1", True), ("[::1]", True),
    ("localhost", True), ("LOCALHOST", True), ("0.0.0.0", False), ("::", False),  # noqa: S104
    ("10.1.2.3", False), ("example.com", False), ("", False)])
def test_only_loopback_addresses_count_as_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
