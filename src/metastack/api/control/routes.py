"""The route table: every control API operation with its body, response and query parameters."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import BaseModel, create_model

from metastack.api.control.agents import AGENT_ROUTES
from metastack.api.control.context import CONTEXT, parse_body, respond
from metastack.api.control.feed import FEED_PARAMS, changes
from metastack.api.control.table import Param, Query, Route, check_query
from metastack.errors import InvalidInput
from metastack.store import specs, views
from metastack.store.ports import PortFilter
from metastack.store.sql import SqlStore


@dataclass(frozen=True, slots=True)
class Crud:
    """A resource with the five operations: create, list, show, update, delete."""

    singular: str
    plural: str
    view: type[BaseModel]
    create_spec: type[BaseModel]
    update_spec: type[BaseModel]
    create: Callable[[SqlStore, Any], BaseModel]
    list: Callable[[SqlStore, Query], Sequence[BaseModel]]
    get: Callable[[SqlStore, str], BaseModel]
    update: Callable[[SqlStore, str, Any], BaseModel]
    delete: Callable[[SqlStore, str], None]
    filters: tuple[Param, ...] = ()


def crud_routes(crud: Crud) -> list[Route]:
    """The five routes of a resource under /v1/<plural>."""
    collection = f"/v1/{crud.plural}"
    item = collection + "/{id}"
    fields: Any = {crud.plural: (list[crud.view], ...)}  # type: ignore[name-defined]
    list_model = create_model(crud.view.__name__.replace("View", "List"), **fields)

    async def create(request: web.Request) -> web.StreamResponse:
        context = request.app[CONTEXT]
        check_query(request, ())
        spec = await parse_body(request, crud.create_spec)
        return respond(await context.write(crud.create, context.store, spec), 201)

    async def list_all(request: web.Request) -> web.StreamResponse:
        context = request.app[CONTEXT]
        query = check_query(request, crud.filters)
        found = await context.call(crud.list, context.store, query)
        return respond({crud.plural: [entry.model_dump(mode="json") for entry in found]})

    async def show(request: web.Request) -> web.StreamResponse:
        context = request.app[CONTEXT]
        check_query(request, ())
        return respond(await context.call(crud.get, context.store, request.match_info["id"]))

    async def update(request: web.Request) -> web.StreamResponse:
        context = request.app[CONTEXT]
        check_query(request, ())
        spec = await parse_body(request, crud.update_spec)
        key = request.match_info["id"]
        return respond(await context.write(crud.update, context.store, key, spec))

    async def delete(request: web.Request) -> web.StreamResponse:
        context = request.app[CONTEXT]
        check_query(request, ())
        await context.write(crud.delete, context.store, request.match_info["id"])
        return web.Response(status=204)

    name, tag = crud.singular, crud.plural
    write_errors = (400, 404, 409, 413)
    return [
        Route(
            "POST",
            collection,
            create,
            f"create_{name}",
            f"Create a {name}",
            tag,
            status=201,
            body=crud.create_spec,
            response=crud.view,
            errors=write_errors,
        ),
        Route(
            "GET",
            collection,
            list_all,
            f"list_{tag}",
            f"List {tag}",
            tag,
            response=list_model,
            query=crud.filters,
            errors=(400,),
        ),
        Route(
            "GET",
            item,
            show,
            f"get_{name}",
            f"Show a {name}",
            tag,
            response=crud.view,
            errors=(404,),
        ),
        Route(
            "PATCH",
            item,
            update,
            f"update_{name}",
            f"Update a {name}",
            tag,
            body=crud.update_spec,
            response=crud.view,
            errors=write_errors,
        ),
        Route(
            "DELETE",
            item,
            delete,
            f"delete_{name}",
            f"Delete a {name}",
            tag,
            status=204,
            errors=(404, 409),
        ),
    ]


def _one(query: Query, name: str) -> str | None:
    return query.get(name)


def _list_ports(store: SqlStore, query: Query) -> Sequence[BaseModel]:
    return store.list_ports(
        PortFilter(
            network_ids=query.getall("network_id", []),
            device_ids=query.getall("device_id", []),
            device_owners=query.getall("device_owner", []),
            ip_address=_one(query, "ip_address"),
            mac_address=_one(query, "mac_address"),
            project_id=_one(query, "project_id"),
        )
    )


def _names(*names: str) -> tuple[Param, ...]:
    return tuple(Param(n, f"only objects whose {n} equals this") for n in names)


def _any_of(name: str) -> Param:
    return Param(name, f"only objects whose {name} is one of these (repeat for OR)", True)


RESOURCES = (
    Crud(
        "project",
        "projects",
        views.ProjectView,
        specs.ProjectCreate,
        specs.ProjectUpdate,
        SqlStore.create_project,
        lambda store, query: store.list_projects(),
        SqlStore.get_project,
        SqlStore.update_project,
        SqlStore.delete_project,
    ),
    Crud(
        "network",
        "networks",
        views.NetworkView,
        specs.NetworkCreate,
        specs.NetworkUpdate,
        SqlStore.create_network,
        lambda store, query: store.list_networks(
            ids=query.getall("id", []), name=query.get("name"), project_id=query.get("project_id")
        ),
        SqlStore.get_network,
        SqlStore.update_network,
        SqlStore.delete_network,
        (_any_of("id"), *_names("name", "project_id")),
    ),
    Crud(
        "subnet",
        "subnets",
        views.SubnetView,
        specs.SubnetCreate,
        specs.SubnetUpdate,
        SqlStore.create_subnet,
        lambda store, query: store.list_subnets(
            network_ids=query.getall("network_id", []), name=query.get("name")
        ),
        SqlStore.get_subnet,
        SqlStore.update_subnet,
        SqlStore.delete_subnet,
        (_any_of("network_id"), *_names("name")),
    ),
    Crud(
        "router",
        "routers",
        views.RouterView,
        specs.RouterCreate,
        specs.RouterUpdate,
        SqlStore.create_router,
        lambda store, query: store.list_routers(
            ids=query.getall("id", []), project_id=query.get("project_id"), name=query.get("name")
        ),
        SqlStore.get_router,
        SqlStore.update_router,
        SqlStore.delete_router,
        (_any_of("id"), *_names("name", "project_id")),
    ),
    Crud(
        "port",
        "ports",
        views.PortView,
        specs.PortCreate,
        specs.PortUpdate,
        SqlStore.create_port,
        _list_ports,
        SqlStore.get_port,
        SqlStore.update_port,
        SqlStore.delete_port,
        (
            _any_of("network_id"),
            _any_of("device_id"),
            _any_of("device_owner"),
            *_names("ip_address", "mac_address", "project_id"),
        ),
    ),
    Crud(
        "instance",
        "instances",
        views.InstanceView,
        specs.InstanceCreate,
        specs.InstanceUpdate,
        SqlStore.create_instance,
        lambda store, query: store.list_instances(
            project_id=query.get("project_id"), name=query.get("name")
        ),
        SqlStore.get_instance,
        SqlStore.update_instance,
        SqlStore.delete_instance,
        _names("name", "project_id"),
    ),
)


async def add_interface(request: web.Request) -> web.StreamResponse:
    """POST /v1/routers/{id}/interfaces {"subnet_id", "ip_address"?}: 201 with the router."""
    context = request.app[CONTEXT]
    check_query(request, ())
    spec = await parse_body(request, specs.InterfaceAdd)
    router_id = request.match_info["id"]
    return respond(await context.write(context.store.add_router_interface, router_id, spec), 201)


async def remove_interface(request: web.Request) -> web.StreamResponse:
    """DELETE /v1/routers/{id}/interfaces/{subnet_id}: 204."""
    context = request.app[CONTEXT]
    check_query(request, ())
    router_id, subnet_id = request.match_info["id"], request.match_info["subnet_id"]
    await context.write(context.store.remove_router_interface, router_id, subnet_id)
    return web.Response(status=204)


async def show_password(request: web.Request) -> web.StreamResponse:
    """GET /v1/instances/{id}/password: the (guest-encrypted) password, '' when unset."""
    context = request.app[CONTEXT]
    check_query(request, ())
    password = await context.call(context.store.get_password, request.match_info["id"])
    return respond(views.PasswordView(password=password))


async def clear_password(request: web.Request) -> web.StreamResponse:
    """DELETE /v1/instances/{id}/password: forget it, so the guest may post a new one."""
    context = request.app[CONTEXT]
    check_query(request, ())
    await context.write(context.store.clear_password, request.match_info["id"])
    return web.Response(status=204)


async def show_metadata(request: web.Request) -> web.StreamResponse:
    """GET /v1/instances/{id}/metadata: {"metadata": {...}}."""
    context = request.app[CONTEXT]
    check_query(request, ())
    found = await context.call(context.store.get_instance, request.match_info["id"])
    return respond(views.InstanceMetadataView(metadata=found.metadata))


async def set_metadata(request: web.Request) -> web.StreamResponse:
    """POST /v1/instances/{id}/metadata {"metadata": {k: v}}: merge (nova's POST
    /servers/{id}/metadata): the given keys are added or changed, the others kept."""
    context = request.app[CONTEXT]
    check_query(request, ())
    spec = await parse_body(request, specs.InstanceMetadataSet)
    instance_uuid = request.match_info["id"]
    merged = await context.write(context.store.set_instance_metadata, instance_uuid, spec.metadata)
    return respond(views.InstanceMetadataView(metadata=merged))


METADATA_KEY = Param(
    "key",
    "a metadata key to remove (repeat for several; all or none are removed)",
    repeatable=True,
    schema={"type": "string", "minLength": 1, "maxLength": 255},
    required=True,
)


async def delete_metadata(request: web.Request) -> web.StreamResponse:
    """DELETE /v1/instances/{id}/metadata?key=K&key=L: remove these keys, keep the others.
    (Keys go in the query, not the path, since a key may hold any character, '/' too.)"""
    context = request.app[CONTEXT]
    keys = check_query(request, (METADATA_KEY,)).getall("key", [])
    try:
        specs.check_metadata_keys(keys)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    instance_uuid = request.match_info["id"]
    remaining = await context.write(context.store.delete_instance_metadata, instance_uuid, keys)
    return respond(views.InstanceMetadataView(metadata=remaining))


def _routes() -> tuple[Route, ...]:
    routes = [route for crud in RESOURCES for route in crud_routes(crud)]
    routes += [
        Route(
            "POST",
            "/v1/routers/{id}/interfaces",
            add_interface,
            "add_router_interface",
            "Add a router interface on a subnet",
            "routers",
            status=201,
            body=specs.InterfaceAdd,
            response=views.RouterView,
            errors=(400, 404, 409, 413),
        ),
        Route(
            "DELETE",
            "/v1/routers/{id}/interfaces/{subnet_id}",
            remove_interface,
            "remove_router_interface",
            "Remove a router interface",
            "routers",
            status=204,
            errors=(404,),
        ),
        Route(
            "GET",
            "/v1/instances/{id}/password",
            show_password,
            "get_instance_password",
            "Show the password the guest posted",
            "instances",
            response=views.PasswordView,
            errors=(404,),
        ),
        Route(
            "DELETE",
            "/v1/instances/{id}/password",
            clear_password,
            "clear_instance_password",
            "Clear the guest password",
            "instances",
            status=204,
            errors=(404,),
        ),
        Route(
            "GET",
            "/v1/instances/{id}/metadata",
            show_metadata,
            "get_instance_metadata",
            "Show an instance's metadata items",
            "instances",
            response=views.InstanceMetadataView,
            errors=(404,),
        ),
        Route(
            "POST",
            "/v1/instances/{id}/metadata",
            set_metadata,
            "set_instance_metadata",
            "Add or change metadata items, keeping the others (merge)",
            "instances",
            body=specs.InstanceMetadataSet,
            response=views.InstanceMetadataView,
            errors=(400, 404, 413),
        ),
        Route(
            "DELETE",
            "/v1/instances/{id}/metadata",
            delete_metadata,
            "delete_instance_metadata",
            "Remove metadata items by key, keeping the others",
            "instances",
            response=views.InstanceMetadataView,
            query=(METADATA_KEY,),
            errors=(400, 404),
        ),
        Route(
            "GET",
            "/v1/changes",
            changes,
            "list_changes",
            "Changes after a revision, optionally long-polling",
            "changes",
            response=views.ChangesView,
            query=FEED_PARAMS,
            errors=(400, 410),
        ),
        *AGENT_ROUTES,
    ]
    return tuple(routes)


ROUTES = _routes()
