/* The rules pages: configure rules, preview, save rule sets, start runs, follow a started run.
 * Plain JS over the JSON routes of /rules/api (see include/migration_manager/ui/rules_page.py). */
(function () {
  "use strict";

  const $ = (sel, root) => (root || document).querySelector(sel);
  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));
  const GROUPS = ["system", "user"];
  const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
  const fmt = (n) => Number(n || 0).toLocaleString("en-US").replace(/,/g, "\u202f");

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else node.setAttribute(k, v);
    }
    for (const c of children) if (c != null) node.append(c);
    return node;
  }

  /** The message of an error answer: {detail: string | {message, problems} | [pydantic errors]}. */
  function problemOf(status, body) {
    const d = body && body.detail;
    if (typeof d === "string") return { message: d, problems: [] };
    if (Array.isArray(d)) return { message: d.map((e) => `${(e.loc || []).join(".")}: ${e.msg}`).join("\n"), problems: [] };
    if (d && typeof d === "object") return { message: d.message || String(status), problems: d.problems || [] };
    return { message: `The server answered ${status}`, problems: [] };
  }

  async function call(method, url, body) {
    const init = { method, headers: { Accept: "application/json" }, credentials: "same-origin" };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const resp = await fetch(url, init);
    const text = await resp.text();
    let parsed = null;
    try { parsed = text ? JSON.parse(text) : null; } catch (e) { parsed = { detail: text }; }
    if (!resp.ok) {
      const err = new Error(problemOf(resp.status, parsed).message);
      err.problems = problemOf(resp.status, parsed).problems;
      err.status = resp.status;
      throw err;
    }
    return parsed;
  }

  async function busy(button, work) {
    button.disabled = true;
    button.classList.add("busy");
    try { return await work(); } finally { button.disabled = false; button.classList.remove("busy"); }
  }

  /** Rules documents compare equal whatever the order of their keys. */
  function canon(rules) {
    const out = {};
    for (const g of GROUPS) {
      const part = (rules && rules[g]) || {};
      const ind = part.independent || {};
      out[g] = { default: part.default, independent: Object.keys(ind).sort().map((k) => [k, ind[k]]) };
    }
    return JSON.stringify(out);
  }

  // --- the New migration page -------------------------------------------------------------------
  function rulesPage(data) {
    const rows = $$("tr[data-table]");
    const byName = new Map(rows.map((r) => [r.dataset.table, r]));
    const api = data.api;
    let saved = data.rule_set ? { name: data.rule_set.name, rules: canon(data.rule_set.rules) } : null;
    let asked = 0;
    let previewed = null; // canon(rules) + target of the preview shown

    const openSet = $("#open-rule-set");
    if (openSet) {
      openSet.addEventListener("change", () => {
        if (openSet.value) location.href = `${data.base}/rules?rule_set=${encodeURIComponent(openSet.value)}`;
      });
    }
    if (!rows.length) return;

    const groupOn = (g) => $(`.group-independent[data-group="${g}"]`).checked;

    function currentRules() {
      const rules = {};
      for (const g of GROUPS) {
        rules[g] = { default: $(`.group-default[data-group="${g}"]`).value, independent: {} };
        if (!groupOn(g)) continue;
        for (const row of rows) {
          if (row.dataset.group !== g) continue;
          const value = $(".table-rule", row).value;
          if (value) rules[g].independent[row.dataset.table] = value;
        }
      }
      return rules;
    }

    function syncControls() {
      for (const g of GROUPS) {
        const on = groupOn(g);
        let n = 0;
        for (const row of rows) {
          if (row.dataset.group !== g) continue;
          const select = $(".table-rule", row);
          // never locked: choosing a rule turns the group's independent rules on (turnOn);
          // with them off, a rule left in the list is shown as not applied
          row.classList.toggle("group-off", !on);
          select.title = on ? "" : "Not applied while independent rules are off for this group; choosing a rule turns them on";
          const independent = on && select.value !== "";
          row.classList.toggle("independent", independent);
          if (independent) n += 1;
        }
        $(`.independent-count[data-group="${g}"]`).textContent = n;
      }
      const picked = rows.filter((r) => $(".pick", r).checked);
      rows.forEach((r) => r.classList.toggle("picked", $(".pick", r).checked));
      $("#selected-count").textContent = picked.length;
      $("#bulk-assign").disabled = picked.length === 0;
      $("#bulk-clear").disabled = picked.length === 0;
    }

    function showProblems(problems) {
      const box = $("#problems");
      box.textContent = "";
      if (!problems || !problems.length) return;
      const list = el("ul");
      problems.forEach((p) => list.append(el("li", { text: p })));
      box.append(el("div", { class: "alert error" }, el("strong", { text: "Planning would refuse this configuration:" }), list));
    }

    function showNotice(text, warn) {
      const box = $("#notice");
      box.hidden = !text;
      box.textContent = text || "";
      box.classList.toggle("warn", !!warn);
    }

    function applyView(view) {
      for (const t of view.tables) {
        const row = byName.get(t.name);
        if (!row) continue;
        const now = $(".now", row);
        now.textContent = "";
        now.append(el("span", { class: `rule r-${t.rule}`, text: t.rule }), el("span", { class: "sub source", text: t.rule_source }));
        if (t.problem) now.append(el("span", { class: "sub bad problem", text: t.problem }));
        row.classList.toggle("has-problem", !!t.problem);
      }
      showProblems(view.problems);
      const blocked = view.problems.length > 0;
      for (const id of ["#preview", "#start-create", "#start-sync", "#save"]) $(id).disabled = blocked;
    }

    function markSaved() {
      const status = $("#save-status");
      const chip = $("#loaded-chip");
      if (saved && saved.rules === canon(currentRules()) && $("#rs-name").value.trim() === saved.name) {
        if (status.classList.contains("pending")) {
          status.className = "small muted";
          status.textContent = `Saved as rule_sets/${saved.name}.yaml.`;
        }
        if (chip) chip.textContent = `rule set ${saved.name}`;
      } else if (saved) {
        status.className = "small muted pending";
        status.textContent = `Changed since rule set ${saved.name} was saved.`;
        if (chip) chip.textContent = `rule set ${saved.name} (changed)`;
      }
    }

    function markStale() {
      const key = canon(currentRules()) + "|" + $("#target").value + "|" + $("#allow-drop").checked;
      const stale = previewed !== null && previewed !== key;
      $("#preview-result").classList.toggle("stale", stale);
      rows.forEach((r) => r.classList.toggle("stale", stale));
      const note = $("#preview-result .stale-note");
      if (note) note.hidden = !stale;
    }

    let timer = null;
    function changed() {
      syncControls();
      markSaved();
      markStale();
      clearTimeout(timer);
      timer = setTimeout(refresh, 200);
    }

    async function refresh() {
      const ticket = ++asked;
      const params = new URLSearchParams({ source: data.source, profile: data.profile, rules: JSON.stringify(currentRules()) });
      try {
        const view = await call("GET", `${api}/tables?${params}`);
        if (ticket === asked) applyView(view);
      } catch (err) {
        if (ticket === asked) showProblems([err.message, ...(err.problems || [])]);
      }
    }

    // search
    $("#search").addEventListener("input", () => {
      const q = $("#search").value.trim().toLowerCase();
      filterRows(q);
    });
    function filterRows(q) {
      const onlyChanges = $("#only-changes").checked;
      const shown = { system: 0, user: 0 };
      for (const row of rows) {
        const match = !q || row.dataset.table.toLowerCase().includes(q);
        const changes = !onlyChanges || row.dataset.changes === "1";
        row.hidden = !(match && changes);
        if (!row.hidden) shown[row.dataset.group] += 1;
      }
      for (const g of GROUPS) {
        const total = rows.filter((r) => r.dataset.group === g).length;
        $(`[data-shown="${g}"]`).textContent = shown[g] === total ? total : `${shown[g]} of ${total}`;
      }
    }
    $("#only-changes").addEventListener("change", () => filterRows($("#search").value.trim().toLowerCase()));

    // selection
    rows.forEach((row) => $(".pick", row).addEventListener("change", syncControls));
    $$(".select-all").forEach((box) => box.addEventListener("change", () => {
      for (const row of rows) {
        if (row.dataset.group === box.dataset.group && !row.hidden && !$(".pick", row).disabled) $(".pick", row).checked = box.checked;
      }
      syncControls();
    }));

    // group defaults, independent toggles, per-table rules
    $$(".group-default").forEach((s) => s.addEventListener("change", changed));
    $$(".group-independent").forEach((s) => s.addEventListener("change", changed));
    /** Turn on independent rules of the groups of ``chosen`` rows (a rule was chosen for them). */
    function turnOn(chosen) {
      const groups = [...new Set(chosen.map((row) => row.dataset.group))].filter((g) => !groupOn(g));
      for (const g of groups) $(`.group-independent[data-group="${g}"]`).checked = true;
      const names = { user: "user-defined tables", system: "system tables" };
      return groups.length ? `Independent rules turned on for ${groups.map((g) => names[g]).join(" and ")}.` : "";
    }
    rows.forEach((row) => $(".table-rule", row).addEventListener("change", () => {
      if ($(".table-rule", row).value) {
        const note = turnOn([row]);
        if (note) showNotice(`${note} ${row.dataset.table} gets ${$(".table-rule", row).value}.`);
      }
      changed();
    }));
    $("#target").addEventListener("change", markStale);
    $("#allow-drop").addEventListener("change", markStale);
    $("#rs-name").addEventListener("input", markSaved);

    // bulk assign
    $("#bulk-assign").addEventListener("click", () => {
      const rule = $("#bulk-rule").value;
      const done = [];
      const skipped = [];
      for (const row of rows) {
        if (!$(".pick", row).checked) continue;
        const option = $(`option[value="${rule}"]`, $(".table-rule", row));
        if (option.disabled) skipped.push(option.title);
        else { $(".table-rule", row).value = rule; done.push(row); }
      }
      let text = done.length ? `${rule} assigned to ${done.map((r) => r.dataset.table).join(", ")}. ${turnOn(done)}`.trim() : "";
      if (skipped.length) text += `${text ? "\n" : ""}Not assigned (planning would refuse it):\n${skipped.join("\n")}`;
      showNotice(text, skipped.length > 0);
      changed();
    });
    $("#bulk-clear").addEventListener("click", () => {
      const names = [];
      for (const row of rows) {
        if ($(".pick", row).checked) { $(".table-rule", row).value = ""; names.push(row.dataset.table); }
      }
      showNotice(`${names.join(", ")} back to the group default.`);
      changed();
    });

    function body(extra) {
      return Object.assign({ source_conn_id: data.source, profile: data.profile, rules: currentRules() }, extra || {});
    }

    // preview
    $("#preview").addEventListener("click", () => busy($("#preview"), async () => {
      const box = $("#preview-result");
      const target = $("#target").value;
      box.hidden = false;
      box.textContent = target ? "Starting a dry run on the target…" : "Resolving the plan…";
      try {
        const out = await call("POST", `${api}/preview`, body({ target_conn_id: target || null, allow_drop: $("#allow-drop").checked }));
        previewed = canon(out.rules) + "|" + target + "|" + $("#allow-drop").checked;
        if (out.run) await followPreview(out);
        else showPreview(out);
      } catch (err) {
        box.textContent = "";
        box.append(el("p", { class: "error-text", text: [err.message, ...(err.problems || [])].join("\n") }));
      }
      markStale();
    }));

    /** A preview with a target is a dry run (a migration_sync DAG run): follow it, then show it. */
    async function followPreview(out) {
      const box = $("#preview-result");
      for (;;) {
        const st = await call("GET", out.run.result);
        if (st.results) {
          showPreview(Object.assign({}, out, { results: st.results, totals: st.totals, seconds: st.seconds }));
          if (st.log_page) box.append(el("p", { class: "small" }, el("a", { href: st.log_page, text: "The dry run's page (sample keys, SQL, log)" })));
          return;
        }
        box.textContent = "";
        const link = el("a", { href: out.run.url, text: `${out.run.dag_id} run ${out.run.run_id}` });
        if (st.finished) {
          box.append(el("p", { class: "error-text" }, `The dry run ended ${st.state} without a run log: see `, link, "."));
          return;
        }
        const done = Object.entries(st.counts || {}).filter(([k]) => ["success", "skipped"].includes(k)).reduce((a, [, n]) => a + n, 0);
        box.append(el("p", {}, `Dry run on ${out.target_conn_id} (${st.state}, ${done} tasks done): `, link, ". Nothing is committed; the result shows here when it has finished."));
        await new Promise((resolve) => setTimeout(resolve, 3000));
      }
    }

    function showPreview(out) {
      const box = $("#preview-result");
      box.textContent = "";
      const byTable = new Map((out.results || []).map((r) => [r.table, r]));
      const counts = {};
      out.plan.forEach((t) => { counts[t.rule] = (counts[t.rule] || 0) + 1; });
      const mix = Object.entries(counts).sort((a, b) => b[1] - a[1]).map(([r, n]) => `${n} ${r}`).join(" · ");
      if (!out.results) {
        box.append(el("p", {}, el("strong", { text: `${out.plan.length} tables: ` }), mix));
        box.append(el("p", { class: "muted small", text: "Choose a target connection to see what a run would change." }));
        return;
      }
      const t = out.totals;
      box.append(el("p", {}, el("strong", { text: `On ${out.target_conn_id}: ` }), `${t.tables_changed} of ${out.results.length} tables change` + (t.tables_created ? `, ${t.tables_created} created` : "")));
      const figures = el("div", { class: "figures" });
      for (const [label, value, cls] of [["inserted", t.inserted, "ins"], ["updated", t.updated, "upd"], ["deleted", t.deleted, "del"]]) {
        figures.append(el("div", {}, el("b", { class: `delta ${cls}`, text: fmt(value) }), el("span", { text: `rows ${label}` })));
      }
      box.append(figures);
      box.append(el("p", { class: "muted small", text: `${mix}. ${t.ddl} DDL statements. Computed by a dry run, every unit rolled back (${out.seconds} s): nothing was written.` }));
      box.append(el("p", { class: "small bad stale-note", text: "The rules or the target changed: preview again.", hidden: "" }));
      for (const row of rows) {
        const r = byTable.get(row.dataset.table);
        const cell = $(".on-target", row);
        cell.textContent = "";
        row.dataset.changes = "0";
        if (!r) { cell.append(el("span", { class: "muted", text: "—" })); continue; }
        const parts = [];
        if (r.inserted) parts.push(el("span", { class: "delta ins", text: `+${fmt(r.inserted)}` }));
        if (r.updated) parts.push(el("span", { class: "delta upd", text: `~${fmt(r.updated)}` }));
        if (r.deleted) parts.push(el("span", { class: "delta del", text: `−${fmt(r.deleted)}` }));
        if (parts.length || r.ddl.length) row.dataset.changes = "1";
        if (!parts.length) parts.push(el("span", { class: "muted", text: r.status === "skipped" ? "skipped" : (r.ddl.length ? "" : "unchanged") }));
        parts.forEach((p) => cell.append(p));
        if (r.changes.length) cell.append(el("span", { class: "change", text: r.changes.join(", "), title: r.ddl.join(";\n") }));
      }
      $(".only-changes").hidden = false;
      $$("th.target-col").forEach((th) => { th.textContent = `On ${out.target_conn_id}`; });
    }

    // save
    $("#save").addEventListener("click", () => {
      const status = $("#save-status");
      const name = $("#rs-name").value.trim();
      if (!NAME.test(name) || name.includes("..")) {
        status.className = "small bad";
        status.textContent = "Name: 1-64 letters, digits, '_', '.', '-', starting with a letter or digit (no '/', '\\' or '..').";
        return;
      }
      const known = Array.from($("#open-rule-set").options).map((o) => o.value);
      if (known.includes(name) && (!saved || saved.name !== name) && !window.confirm(`Replace the saved rule set ${name}?`)) return;
      busy($("#save"), async () => {
        try {
          const out = await call("PUT", `${api}/rule-sets/${encodeURIComponent(name)}`, {
            source_conn_id: data.source, profile: data.profile, rules: currentRules(), description: $("#rs-description").value,
          });
          saved = { name: out.name, rules: canon(out.rules) };
          status.className = "small ok";
          status.textContent = `Saved as rule_sets/${out.name}.yaml.`;
          if (!known.includes(name)) $("#open-rule-set").append(el("option", { value: name, text: name }));
          $("#open-rule-set").value = name;
          const url = new URL(location.href);
          url.search = new URLSearchParams({ source: data.source, profile: data.profile, rule_set: name }).toString();
          history.replaceState(null, "", url);
          let chip = $("#loaded-chip");
          if (!chip) { chip = el("span", { class: "chip", id: "loaded-chip" }); $("h1").append(" ", chip); }
          chip.textContent = `rule set ${name}`;
        } catch (err) {
          status.className = "small bad";
          status.textContent = [err.message, ...(err.problems || [])].join("\n");
        }
      });
    });

    // start
    function start(action, button) {
      const error = $("#start-error");
      error.hidden = true;
      const target = $("#target").value;
      if (action === "sync" && !target) {
        error.hidden = false;
        error.textContent = "Sync now needs a target connection (above).";
        return;
      }
      const unchanged = saved && saved.rules === canon(currentRules());
      const payload = unchanged
        ? { action, source_conn_id: data.source, rule_set: saved.name }
        : body({ action });
      if (action === "sync") {
        Object.assign(payload, {
          target_conn_id: target,
          allow_drop: $("#allow-drop").checked,
          on_missing_plugins: $("#on-missing-plugins").value,
          on_missing_env: $("#on-missing-env").value,
        });
      }
      busy(button, async () => {
        try {
          const out = await call("POST", `${api}/start`, payload);
          location.href = out.url;
        } catch (err) {
          error.hidden = false;
          error.textContent = [err.message, ...(err.problems || [])].join("\n");
        }
      });
    }
    $("#start-create").addEventListener("click", (e) => start("create", e.currentTarget));
    $("#start-sync").addEventListener("click", (e) => start("sync", e.currentTarget));

    syncControls();
    applyView({ tables: data.tables, problems: data.problems });
  }

  // --- the Rule sets page ------------------------------------------------------------------------
  function ruleSetsPage(api) {
    $$("button[data-delete]").forEach((button) => button.addEventListener("click", () => {
      const name = button.dataset.delete;
      if (!window.confirm(`Delete the rule set ${name}? Pipelines and DAG runs that name it will fail.`)) return;
      busy(button, async () => {
        try {
          await call("DELETE", `${api}/rule-sets/${encodeURIComponent(name)}`);
          location.href = `${location.pathname}?deleted=${encodeURIComponent(name)}`;
        } catch (err) {
          window.alert(err.message);
        }
      });
    }));
  }

  // --- a started run ----------------------------------------------------------------------------
  function runPage(box) {
    const url = box.dataset.stateUrl;
    let finishedAt = null;
    async function poll() {
      let state;
      try {
        state = await call("GET", url);
      } catch (err) {
        $("#run-message").textContent = err.message;
        setTimeout(poll, 4000);
        return;
      }
      if (state.log_page) {
        $("#run-message").textContent = "The migration log is written: opening it…";
        location.href = state.log_page;
        return;
      }
      render(state);
      if (state.finished) {
        finishedAt = finishedAt || Date.now();
        // create and rollback runs write no migration log: nothing more to wait for
        const logged = !["migration_create", "migration_rollback"].includes(state.dag_id);
        if (logged && Date.now() - finishedAt < 30000) setTimeout(poll, 2000);
        return;
      }
      setTimeout(poll, 2000);
    }
    function render(state) {
      const badge = $("#run-state");
      badge.className = `badge s-${state.state}`;
      badge.textContent = state.state;
      const total = state.tasks.length || 1;
      const done = state.tasks.filter((t) => ["success", "skipped", "failed", "upstream_failed"].includes(t.state)).length;
      $("#run-progress").style.width = `${Math.round((100 * done) / total)}%`;
      const msg = $("#run-message");
      msg.className = "";
      if (state.awaiting_input.length) {
        msg.className = "alert warn";
        msg.textContent = "";
        msg.append(`The run waits for an answer (${state.awaiting_input.join(", ")}): `, el("a", { href: state.required_actions, target: "_top", text: "open Required actions in Airflow" }), ".");
      } else if (state.state === "success" && state.migration_file) {
        msg.className = "alert ok";
        msg.textContent = "";
        msg.append("Migration file created: ", el("a", { href: `${box.dataset.base}/files`, text: state.migration_file }), ". Run it from Migration files, or upload it to another Airflow.");
      } else if (state.dag_id === "migration_rollback" && state.state === "success") {
        msg.className = "alert ok";
        msg.textContent = "";
        msg.append("The backup is restored and verified (every table's rows and checksum). ", el("a", { href: `${box.dataset.base}/`, text: "The Migrations history" }), " marks the run it undid as rolled back; ", el("a", { href: `${box.dataset.base}/backups`, text: "Backups" }), " shows the restore.");
      } else if (state.dag_id === "migration_rollback" && state.state === "failed") {
        msg.className = "alert error";
        msg.textContent = "";
        msg.append("The restore failed; a restore runs in one transaction, so the target is as it was. ", el("a", { href: state.airflow_run, target: "_top", text: "The Airflow run's restore log" }), " says why (e.g. other clients connected: stop the application first).");
      } else if (state.state === "failed") {
        msg.className = "alert error";
        msg.textContent = "The run failed. Its migration log opens here once written; the Airflow run has every task's log.";
      } else if (state.finished) {
        msg.textContent = "The run has finished; waiting for its migration log…";
      } else {
        msg.textContent = `${done} of ${state.tasks.length || "?"} tasks done. This page follows the run and opens its migration log when it is written.`;
      }
      const body = $("#run-tasks");
      body.textContent = "";
      for (const t of state.tasks) {
        const name = t.map_index >= 0 ? `${t.task_id}[${t.label || t.map_index}]` : t.task_id;
        body.append(el("tr", {}, el("td", { class: "mono small", text: name }), el("td", {}, el("span", { class: `badge s-${t.state}`, text: t.state.replace(/_/g, " ") }))));
      }
    }
    poll();
  }

  document.addEventListener("DOMContentLoaded", () => {
    const data = $("#mm-data");
    if (data) rulesPage(JSON.parse(data.textContent));
    const sets = $("#rule-sets");
    if (sets) ruleSetsPage(sets.dataset.api);
    const run = $("#run-follow");
    if (run) runPage(run);
  });
})();
