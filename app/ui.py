"""The Gradio UI: a global compute-budget slider with its live plan, and Search / Classify / Chat / Library tabs.

Tabs call the same :class:`~app.services.Services` as the HTTP API; a tab whose model the server lacks is
disabled with its one-line reason.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any
from urllib.parse import quote

import gradio as gr

from retrieval.search import SearchFilters

from .services import BadInput, Services, Unavailable

PAGE = 12


def _plan_text(services: Services, budget: int) -> str:
    try:
        p = services.plan(int(budget))
    except BadInput as exc:
        return f"**{exc}**"
    return (f"**{p.budget} tokens** → {p.frames} frames × {p.resolution}px, keeps {p.tokens} of {p.pool_tokens} "
            f"tokens (head {p.head}), ≈ {p.est_gmacs:.2f} GMACs = {100 * p.relative_cost:.0f}% of the full model")


def _error(exc: Exception) -> str:
    return f"⚠️ {exc}"


def _player(moment: dict[str, Any] | None) -> str:
    if not moment:
        return ""
    src = f"/api/video?path={quote(moment['path'], safe='')}#t={moment['start']:.2f},{moment['end']:.2f}"
    title = html.escape(f"{Path(moment['path']).name}  {moment['start']:.1f}–{moment['end']:.1f} s")
    return (f'<div class="fluxvid-player"><p>{title}</p><video id="fluxvid-player" src="{src}" controls autoplay '
            f'muted playsinline style="max-width:100%"></video></div>')


def build_ui(services: Services) -> gr.Blocks:
    s = services.settings
    reasons = services.availability()
    try:
        index_budget = services.index_budget()
    except Unavailable as exc:
        reasons["search"] = reasons["library"] = str(exc)
        index_budget = None

    with gr.Blocks(title=s.title, analytics_enabled=False) as ui:
        gr.Markdown(f"# {s.title}\nSearch, classify and chat about videos at the compute budget you choose.")
        budget = gr.Slider(s.min_budget, s.max_budget, value=s.default_budget, step=64, label="Compute budget (tokens)",
                           elem_id="budget")
        plan_md = gr.Markdown(_plan_text(services, s.default_budget), elem_id="plan")
        budget.change(lambda b: _plan_text(services, b), budget, plan_md)

        with gr.Tab("Search"):
            if reasons["search"]:
                gr.Markdown(f"Search is unavailable: {reasons['search']}")
            gr.Markdown(f"Text search ranks the library's vectors, encoded at the index's budget "
                        f"({index_budget or '?'} tokens), so the slider does not change it; a query by video is "
                        f"encoded at the slider's budget.", elem_id="search-note")
            with gr.Row():
                query = gr.Textbox(label="Describe the moment", scale=4, elem_id="query",
                                   interactive=reasons["search"] is None)
                go = gr.Button("Search", variant="primary", elem_id="search-button",
                               interactive=reasons["search"] is None)
            with gr.Row():
                tags = gr.Textbox(label="Tags (comma separated)")
                folder = gr.Textbox(label="Folder")
                min_d = gr.Number(label="Min duration (s)", value=None)
                max_d = gr.Number(label="Max duration (s)", value=None)
            gallery = gr.Gallery(label="Moments", columns=4, height="auto", elem_id="moments", allow_preview=False)
            with gr.Row():
                previous = gr.Button("◀ Previous")
                page_md = gr.Markdown("", elem_id="search-status")
                following = gr.Button("Next ▶")
                like = gr.Button("More like this", elem_id="more-like-this")
            with gr.Accordion("Find moments like a video", open=False):
                with gr.Row():
                    query_video = gr.Video(label="Query video", sources=["upload"], elem_id="query-video")
                    by_video = gr.Button("Search by video", elem_id="search-video-button",
                                         interactive=reasons["search"] is None)
            player = gr.HTML(elem_id="player")
            moments = gr.State([])
            selected = gr.State(None)
            page = gr.State(0)

            def run_search(text, tag_text, folder_text, low, high, page_number):
                filters = SearchFilters(tuple(t.strip() for t in (tag_text or "").split(",") if t.strip()),
                                        folder_text or None, low or None, high or None)  # empty boxes read 0
                try:
                    found = services.search(text or "", PAGE, filters, offset=page_number * PAGE)
                except (BadInput, Unavailable) as exc:
                    return [], [], f"{_error(exc)}", page_number
                return _gallery(found), found, f"page {page_number + 1}, {len(found)} moments", page_number

            inputs = [query, tags, folder, min_d, max_d]
            go.click(lambda *a: run_search(*a, 0), inputs, [gallery, moments, page_md, page])
            query.submit(lambda *a: run_search(*a, 0), inputs, [gallery, moments, page_md, page])
            following.click(lambda *a: run_search(*a[:-1], a[-1] + 1), inputs + [page],
                            [gallery, moments, page_md, page])
            previous.click(lambda *a: run_search(*a[:-1], max(a[-1] - 1, 0)), inputs + [page],
                           [gallery, moments, page_md, page])

            def pick(found, event: gr.SelectData):
                moment = found[event.index] if found and event.index < len(found) else None
                return _player(moment), moment

            gallery.select(pick, moments, [player, selected])

            def more_like(moment):
                if not moment:
                    return [], [], "pick a moment first"
                try:
                    found = services.similar(moment["segment_id"], PAGE, None)
                except (BadInput, Unavailable) as exc:
                    return [], [], _error(exc)
                return _gallery(found), found, f"moments like {Path(moment['path']).name}"

            like.click(more_like, selected, [gallery, moments, page_md])

            def run_video_search(uploaded, tag_text, folder_text, low, high, b):
                if not uploaded:
                    return [], [], "upload a query video first"
                filters = SearchFilters(tuple(t.strip() for t in (tag_text or "").split(",") if t.strip()),
                                        folder_text or None, low or None, high or None)
                try:
                    services.check_video(Path(uploaded))
                    found = services.search_video(Path(uploaded), PAGE, int(b), filters)
                except (BadInput, Unavailable) as exc:
                    return [], [], _error(exc)
                return _gallery(found), found, f"{len(found)} moments like the query video (encoded at {int(b)} tokens)"

            by_video.click(run_video_search, [query_video, tags, folder, min_d, max_d, budget],
                           [gallery, moments, page_md])

        with gr.Tab("Classify"):
            if reasons["classify"]:
                gr.Markdown(f"Classification is unavailable: {reasons['classify']}")
            with gr.Row():
                upload = gr.Video(label="Upload a video", sources=["upload"], elem_id="classify-upload")
                pick_video = gr.Dropdown([], label="…or pick one from the library", elem_id="classify-pick")
            classify_go = gr.Button("Classify", variant="primary", elem_id="classify-button",
                                    interactive=reasons["classify"] is None)
            labels = gr.Label(num_top_classes=5, label="Top-5", elem_id="labels")
            classify_info = gr.Markdown(elem_id="classify-info")

            def run_classify(uploaded, picked, b):
                try:
                    if uploaded:
                        path = Path(uploaded)
                        services.check_video(path)
                    elif picked:
                        path = services.library_file(picked)
                    else:
                        return None, "upload a video or pick one"
                    result = services.classify(path, int(b), 5)
                except (BadInput, Unavailable) as exc:
                    return None, _error(exc)
                return ({x["label"]: x["score"] for x in result["labels"]},
                        f"{result['plan']['text']} · {result['latency_ms']:.0f} ms")

            classify_go.click(run_classify, [upload, pick_video, budget], [labels, classify_info])

        with gr.Tab("Chat"):
            if reasons["chat"]:
                gr.Markdown(f"Chat is unavailable: {reasons['chat']}")
            with gr.Row():
                chat_upload = gr.Video(label="Upload a video", sources=["upload"])
                chat_pick = gr.Dropdown([], label="…or pick one from the library", elem_id="chat-pick")
            chatbot = gr.Chatbot(label="Conversation", elem_id="chatbot", height=360)
            with gr.Row():
                message = gr.Textbox(label="Ask about the video", scale=4, elem_id="chat-message",
                                     interactive=reasons["chat"] is None)
                send = gr.Button("Send", variant="primary", elem_id="chat-send", interactive=reasons["chat"] is None)
                new_session = gr.Button("New session", elem_id="chat-new")
            session_id = gr.BrowserState(None, storage_key="fluxvid-chat-session")

            def respond(text, uploaded, picked, b, sid, history):
                history = list(history or [])
                try:
                    video = Path(uploaded) if uploaded else services.library_file(picked) if picked else None
                    if video is not None and uploaded:
                        services.check_video(video)
                    if video is None and not sid:
                        raise BadInput("pick or upload a video first")
                    sid, stream = services.chat(sid, text or "", video, int(b))
                except (BadInput, Unavailable) as exc:
                    yield history + [{"role": "assistant", "content": _error(exc)}], "", sid
                    return
                history += [{"role": "user", "content": text}, {"role": "assistant", "content": ""}]
                for piece in stream:
                    history[-1]["content"] += piece
                    yield history, "", sid
                yield history, "", sid

            send.click(respond, [message, chat_upload, chat_pick, budget, session_id, chatbot],
                       [chatbot, message, session_id])
            message.submit(respond, [message, chat_upload, chat_pick, budget, session_id, chatbot],
                           [chatbot, message, session_id])

            def restart(sid):
                if sid:
                    services.reset_chat(sid)
                return [], None

            new_session.click(restart, session_id, [chatbot, session_id])

            def restore(sid, shown):
                """The conversation of the browser's session id, read back from the server after a reload."""
                if shown:
                    return gr.skip()  # a conversation on screen is newer than the stored one
                turns = services.history(sid) if sid else []
                return [m for q, a in turns for m in ({"role": "user", "content": q},
                                                      {"role": "assistant", "content": a})]

            # The browser hands the stored id over after the page has loaded, as a change of the state; that change
            # may arrive while the load's restore is still running, so it must queue behind it, not be dropped.
            gr.on([ui.load, session_id.change], restore, [session_id, chatbot], chatbot, trigger_mode="always_last")

        with gr.Tab("Library"):
            if reasons["library"]:
                gr.Markdown(f"The library is unavailable: {reasons['library']}")
            stats_md = gr.Markdown(elem_id="library-stats")
            skipped = gr.Dataframe(headers=["file", "reason"], label="Skipped files", interactive=False)
            with gr.Row():
                add_folder = gr.Textbox(label="Add a folder", scale=3)
                add = gr.Button("Add", interactive=reasons["library"] is None)
                reindex = gr.Button("Reindex", interactive=reasons["library"] is None)
            job_state = gr.State(None)
            progress_md = gr.Markdown(elem_id="library-progress")
            timer = gr.Timer(1.0, active=False)

            def show_stats(picked_for_classify, picked_for_chat):
                """Statistics, skipped files, and the library's videos for the pickers (they change with builds)."""
                try:
                    if reasons["library"]:
                        raise Unavailable(reasons["library"])
                    st, videos = services.stats(), services.library_videos()
                except (BadInput, Unavailable) as exc:
                    return _error(exc), [], gr.Dropdown(choices=[]), gr.Dropdown(choices=[])
                text = (f"**{st['videos']} videos, {st['segments']} segments**, {len(st['skipped'])} skipped · model "
                        f"`{st['model_id']}` · budget {st['budget']} · {st['dim']}-d · index {st['index_type']}")
                keep = [v if v in videos else None for v in (picked_for_classify, picked_for_chat)]
                return (text, [[x["path"], x["reason"]] for x in st["skipped"]],
                        gr.Dropdown(choices=videos, value=keep[0]), gr.Dropdown(choices=videos, value=keep[1]))

            def start(folder_text):
                try:
                    job = services.start_build(folder_text or None)
                except (BadInput, Unavailable) as exc:
                    return None, _error(exc), gr.Timer(active=False)
                return job.id, f"building {job.folder}…", gr.Timer(active=True)

            def poll(job_id):
                job = services.jobs.get(job_id) if job_id else None
                if job is None:
                    return "", gr.Timer(active=False)
                eta = f", about {job.eta_seconds:.0f} s left" if job.eta_seconds else ""
                text = (f"{job.state}: {job.videos_done}/{job.videos_total} videos, {job.segments} segments, "
                        f"{job.skipped} skipped{eta}. {job.message}")
                return text, gr.Timer(active=job.state == "running")

            library_outputs = [stats_md, skipped, pick_video, chat_pick]
            ui.load(show_stats, [pick_video, chat_pick], library_outputs)
            add.click(start, add_folder, [job_state, progress_md, timer])
            reindex.click(lambda: start(None), None, [job_state, progress_md, timer])
            timer.tick(poll, job_state, [progress_md, timer]).then(show_stats, [pick_video, chat_pick],
                                                                   library_outputs)
    return ui


def _gallery(found: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(m["thumbnail"], f"{Path(m['path']).name} {m['start']:.1f}–{m['end']:.1f}s · {m['score']:.3f}")
            for m in found if m.get("thumbnail")]
