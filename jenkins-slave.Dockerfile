# The Jenkins agent the orders pipeline's stages run in (see Jenkinsfile).
# OpenShift's Jenkins agent base (remoting client, Java, git, oc) plus what
# the test stage needs: Python 3.11 with pip, make, and a PostgreSQL server
# the stage starts for itself, so no shared test database is needed.
#
#   oc new-build --name=orders-jenkins-agent --strategy=docker \
#       --dockerfile="$(cat jenkins-slave.Dockerfile)" -n shop-ci
FROM quay.io/openshift/origin-jenkins-agent-base:4.13

LABEL summary="Jenkins agent for the orders service's pipeline" \
      description="OpenShift's Jenkins agent base with Python 3.11, make and a PostgreSQL 15 server, for running the orders service's test suite." \
      io.k8s.display-name="Jenkins agent: orders (Python 3.11, PostgreSQL 15)" \
      io.k8s.description="Runs the orders service's tests on their own PostgreSQL server." \
      io.openshift.tags="jenkins,jenkins-agent,python,python311,postgresql,postgresql15"

# The base image's root: only to install, then back to 1001 below.
USER 0

# PostgreSQL 15 comes as a module stream on this RHEL 8 based image;
# PgBouncer (AppStream) is for test_scaling.py, which runs the service
# behind it; nss_wrapper lets initdb run under the arbitrary user id
# OpenShift gives the pod. No docs, verified, caches cleaned, all in one layer.
# DL3033 wants exact versions: these are pinned to their release series
# (a glob), since the repositories' build numbers could not be read where
# this file was written. Replace each with `rpm -q` output from a build.
# hadolint ignore=DL3033
RUN yum -y module enable postgresql:15 && \
    yum -y install --setopt=tsflags=nodocs --setopt=install_weak_deps=false \
        --disableplugin=subscription-manager \
        'python3.11-3.11.*' 'python3.11-pip-22.3.*' 'make-4.2.*' \
        'postgresql-server-15.*' 'postgresql-15.*' 'pgbouncer-1.*' \
        'nss_wrapper-1.1.*' && \
    rpm -V python3.11 python3.11-pip make postgresql-server postgresql pgbouncer \
        nss_wrapper && \
    yum -y clean all && \
    rm -rf /var/cache/yum /var/cache/dnf

# The workspace and pip's cache live under $HOME: owned by group 0 and
# group-writable, as any user id OpenShift picks is in group 0.
RUN mkdir -p /home/jenkins/.cache && \
    chown -R 1001:0 /home/jenkins && \
    chmod -R g+rwX /home/jenkins

ENV PYTHON=python3.11 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

USER 1001
