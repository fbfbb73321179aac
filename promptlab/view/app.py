"""The viewer's routes: each reads the store through one read-only connection and renders a
template (jinja2, autoescaped) that imports the HTML report's own pieces (its macros).

    make_app(db_path, token=None) -> a Starlette app

Pages: projects, a project's runs (filters, sort, pick two to compare), a run, a
compare, a prompt family, an optimization. Two small JSON endpoints feed the live
parts: a running run's counters and a running optimization's chart.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any, Callable

from jinja2 import PackageLoader
from sqlite_utils.db import NotFoundError as RowNotFound
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from promptlab.errors import NotFoundError, UsageError
from promptlab.redact import redact_all
from promptlab.store.records import Run
from promptlab.reports import to_html
from promptlab.store import Store
from promptlab.view import queries
from promptlab.view.guard import Guard

SCRIPT = files("promptlab.view").joinpath("static/view.js").read_bytes()


def make_app(db_path: Path, token: str | None = None) -> Starlette:
    env = to_html.environment(PackageLoader("promptlab.view", "templates"))
    chart_of = env.get_template("optimization_parts.html").module.chart

    def page(template: str, status: int = 200, **context: Any) -> HTMLResponse:
        return HTMLResponse(env.get_template(template).render(**context), status_code=status)

    def reads(handler: Callable[[Request, Store], Response]) -> Callable[[Request], Response]:
        """A route reading the store; a missing record is a 404 page, a bad request a 400 page."""
        def endpoint(request: Request) -> Response:  # sync: Starlette runs it in a worker thread
            try:
                with queries.reading(db_path) as store:
                    return handler(request, store)
            except NotFoundError as exc:
                return page("message.html", 404, title="not found", message=str(exc))
            except OverflowError:  # an id past SQLite's integers: no such record, not a server error
                return page("message.html", 404, title="not found", message="no record with that id")
            except UsageError as exc:
                return page("message.html", 400, title="cannot show this", message=str(exc))
        return endpoint

    def home(request: Request, store: Store) -> Response:
        return page("projects.html", title="projects", projects=queries.projects(store))

    def project(request: Request, store: Store) -> Response:
        project = queries.project(store, request.path_params["pid"])
        q = request.query_params
        sort = q.get("sort") if q.get("sort") in queries.RUN_SORTS else "created"
        chosen = {k: q.get(k, "") for k in ("prompt", "model", "status")}
        runs = queries.runs(store, project["id"], **chosen, optimizer_runs=bool(q.get("all")), sort=sort,
                            descending=q.get("order", "desc") == "desc")
        return page("project.html", title=project["name"], project=project, runs=runs, chosen=chosen,
                    sort=sort, order=q.get("order", "desc"), all=bool(q.get("all")), sorts=queries.RUN_SORTS,
                    options=queries.run_filters(store, project["id"]),
                    prompts=queries.prompt_families(store, project["id"]),
                    optimizations=queries.optimizations(store, project["id"]))

    def _run(store: Store, request: Request) -> Run:
        try:
            return store.run_by_id(request.path_params["rid"])
        except RowNotFound:
            raise NotFoundError(f"no run with id {request.path_params['rid']}") from None

    def run(request: Request, store: Store) -> Response:
        """A run's overview and a page of its results: those with the status and the text asked
        for (chosen in SQL), PAGE_SIZE at a time."""
        from promptlab.reports.facts import run_facts
        from promptlab.reports.results import ResultRows

        run = _run(store, request)
        facts = redact_all(run_facts(store, run.project_id, run))
        q = request.query_params
        status = q.get("status") if q.get("status") in queries.RESULT_STATUSES else ""
        search = q.get("q", "").strip()
        matching = ResultRows(store, run.project_id, run.id, status=status, search=search)
        pages = max(1, -(-len(matching) // queries.PAGE_SIZE))
        number = min(pages, max(1, int(q["page"]) if q.get("page", "").isdigit() else 1))
        start = (number - 1) * queries.PAGE_SIZE
        return page("run.html", title=run.name, facts=facts, run=run,
                    project=queries.project(store, run.project_id), progress=queries.progress(store, run),
                    shown=matching[start:start + queries.PAGE_SIZE], matching=len(matching),
                    paging={"status": status, "q": search, "page": number, "pages": pages, "first": start + 1,
                            "paged": pages > 1 or bool(status or search)})

    def result(request: Request, store: Store) -> Response:
        """One result with the messages its prompt version sends for its case (rendered again, sandboxed)."""
        from promptlab.prompting.conversation import text_of
        from promptlab.prompting.render import render_messages
        from promptlab.reports.results import one_result

        run = _run(store, request)
        key = (request.path_params["case_id"], request.path_params["repeat"])
        found = one_result(store, run.project_id, run.id, *key)
        if found is None:
            raise NotFoundError(f"run {run.name} has no result for case {key[0]}, repeat {key[1]}")
        prompt = store.prompt_by_id(run.prompt_id)
        case = store.cases_by_id(run.project_id, [key[0]]).get(key[0])  # facts hold images as labels
        messages = [{"role": m["role"], "content": text_of(m["content"])} for m in render_messages(
            prompt.content, store.prompt_signature(prompt), case.inputs if case else found["inputs"] or {})]
        return page("result.html", title=f"{run.name} · case {key[0]}", run=run,
                    project=queries.project(store, run.project_id), prompt=prompt.ref,
                    result=found, messages=redact_all(messages))

    def progress(request: Request, store: Store) -> Response:
        return JSONResponse(queries.progress(store, _run(store, request)))

    def compare(request: Request, store: Store) -> Response:
        from promptlab.services.compare import compare_runs, resolve_runs

        project = queries.project(store, request.path_params["pid"])
        q = request.query_params
        picked = q.getlist("run")
        if picked:  # two ticked in the runs list: the older is A, the newer B
            if len(picked) != 2:
                raise UsageError(f"tick exactly two runs to compare ({len(picked)} ticked)")
            picked = sorted(picked, key=lambda name: store.run(project["id"], name).id)
        a, b = picked or (q.get("a", ""), q.get("b", ""))
        if not a or not b:
            raise UsageError("name two runs to compare: ?a=RUN&b=RUN (or prompt versions)")
        run_a, run_b = resolve_runs(store, project["id"], a, b)
        data = redact_all(compare_runs(store, project["id"], run_a, run_b))
        return page("compare.html", title=f"{run_a.name} vs {run_b.name}", project=project, c=data)

    def prompt(request: Request, store: Store) -> Response:
        from promptlab.prompting.diffing import diff_text, prompt_text

        project = queries.project(store, request.path_params["pid"])
        name = request.path_params["name"]
        versions = store.prompts(project["id"], name, candidates=True)
        if not versions:
            raise NotFoundError(f"no prompt '{name}' in project {project['name']}")
        by_version = {str(v.version): v for v in versions}
        a = by_version.get(request.query_params.get("a", ""), versions[-2] if len(versions) > 1 else versions[0])
        b = by_version.get(request.query_params.get("b", ""), versions[-1])
        children: dict[int | None, list] = {}
        for v in versions:
            parent = v.parent_id if any(p.id == v.parent_id for p in versions) else None
            children.setdefault(parent, []).append(v)
        from promptlab.services.history import prompt_history

        history = prompt_history(store, project["id"], name, candidates=True)
        return page("prompt.html", title=name, project=project, name=name, versions=versions, a=a, b=b,
                    history=history,
                    diff=redact_all(diff_text(a, b)), children=children,
                    refs={v.id: v.ref for v in versions},
                    texts={v.id: redact_all(prompt_text(v)) for v in versions})

    def _optimization(store: Store, request: Request) -> tuple[dict, dict]:
        from promptlab.reports.facts import optimization_facts

        try:
            opt = store.optimization_by_id(request.path_params["oid"])
        except RowNotFound:
            raise NotFoundError(f"no optimization with id {request.path_params['oid']}") from None
        return queries.project(store, opt.project_id), redact_all(optimization_facts(store, opt.project_id, opt))

    def optimization(request: Request, store: Store) -> Response:
        project, facts = _optimization(store, request)
        return page("optimization.html", title=facts["optimization"]["name"], project=project, facts=facts)

    def chart(request: Request, store: Store) -> Response:
        _, facts = _optimization(store, request)
        return JSONResponse({"status": facts["optimization"]["status"], "candidates": len(facts["candidates"]),
                             "html": str(chart_of(facts))})

    def script(request: Request) -> Response:
        return Response(SCRIPT, media_type="text/javascript")

    routes = [Route("/", reads(home)), Route("/projects/{pid:int}", reads(project)),
              Route("/projects/{pid:int}/compare", reads(compare)),
              Route("/projects/{pid:int}/prompts/{name:path}", reads(prompt)),
              Route("/runs/{rid:int}", reads(run)),
              Route("/runs/{rid:int}/results/{case_id:int}/{repeat:int}", reads(result)), Route("/api/runs/{rid:int}/progress", reads(progress)),
              Route("/optimizations/{oid:int}", reads(optimization)),
              Route("/api/optimizations/{oid:int}/chart", reads(chart)),
              Route("/static/view.js", script)]
    return Starlette(routes=routes, middleware=[Middleware(Guard, token=token)])
