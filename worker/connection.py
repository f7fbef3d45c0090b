"""The connection to Temporal every process makes: the pydantic converter (encrypting when
configured), TLS, and the traces and metrics of the process's role."""

from __future__ import annotations

import dataclasses

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter
from temporalio.service import TLSConfig

from config.settings import Settings
from config.temporal import TemporalTls
from worker import telemetry
from worker.codec import payload_codec
from worker.telemetry import Role


def data_converter(settings: Settings) -> DataConverter:
    """The pydantic converter with the payload codec of these settings: encrypting with
    the codec keys, or, without keys, refusing encrypted payloads in one line."""
    codec = payload_codec(settings.codec_keys_file, settings.codec_key)
    return dataclasses.replace(pydantic_data_converter, payload_codec=codec)


def tls_config(tls: TemporalTls) -> TLSConfig:
    material = tls.material()
    return TLSConfig(
        server_root_ca_cert=material.ca,
        client_cert=material.cert,
        client_private_key=material.key,
        domain=material.server_name,
    )


async def connect(settings: Settings, role: Role = Role.CLI) -> Client:
    """A client of the settings' Temporal, with the pydantic converter every process uses
    (encrypting when configured), and the traces and metrics the environment asks of a
    process of `role` (worker/telemetry.py)."""
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.namespace,
        tls=tls_config(settings.temporal_tls) if settings.temporal_tls else False,
        data_converter=data_converter(settings),
        interceptors=telemetry.interceptors(role),
        runtime=telemetry.runtime(role, settings.metrics_address),
    )
