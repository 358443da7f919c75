// Forms that change something ask first: <form data-confirm="question" data-confirm-button="Restore">.
// The question opens in a <dialog> of the page: the Airflow UI shows plugin pages in a sandboxed
// iframe without "allow-modals", where window.confirm() returns false without asking.
(function () {
  "use strict";
  var dialog = null;
  function ask(form) {
    if (!dialog) {
      dialog = document.createElement("dialog");
      dialog.className = "confirm";
      dialog.innerHTML =
        '<form method="dialog"><p class="question"></p><div class="buttons">' +
        '<button value="cancel" type="submit">Cancel</button>' +
        '<button value="ok" type="submit" class="danger"></button></div></form>';
      document.body.appendChild(dialog);
    }
    dialog.querySelector(".question").textContent = form.dataset.confirm;
    dialog.querySelector('button[value="ok"]').textContent = form.dataset.confirmButton || "OK";
    dialog.returnValue = "";
    dialog.onclose = function () {
      if (dialog.returnValue !== "ok") return;
      form.dataset.confirmed = "1";
      if (form.requestSubmit) form.requestSubmit();
      else form.submit();
    };
    dialog.showModal();
    dialog.querySelector('button[value="cancel"]').focus();
  }
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form || !form.dataset || !form.dataset.confirm) return;
    if (form.dataset.confirmed) {
      delete form.dataset.confirmed;
      return;
    }
    event.preventDefault();
    ask(form);
  });
})();

// Popovers (<details class="run">): one open at a time; Escape or a click elsewhere closes them.
(function () {
  "use strict";
  function closeAll(except) {
    document.querySelectorAll("details.run[open]").forEach(function (d) {
      if (d !== except) d.open = false;
    });
  }
  document.addEventListener(
    "toggle",
    function (event) {
      var d = event.target;
      if (d.matches && d.matches("details.run") && d.open) closeAll(d);
    },
    true
  );
  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape") return;
    var open = document.querySelector("details.run[open]");
    if (!open) return;
    closeAll(null);
    open.querySelector("summary").focus();
  });
  document.addEventListener("click", function (event) {
    if (!event.target.closest || !event.target.closest("details.run")) closeAll(null);
  });
})();

// Links to Airflow's own pages (target="_top": a run, a DAG's trigger form) from this page while
// it is shown inside the Airflow UI. The UI embeds plugin pages in a sandboxed iframe that may
// not navigate the whole window, so the link asks the UI's router to go there instead.
(function () {
  "use strict";
  if (window.top === window.self) return; // opened on its own: links work as they are
  document.addEventListener("click", function (event) {
    var link = event.target.closest ? event.target.closest('a[target="_top"]') : null;
    if (!link || event.defaultPrevented || event.button !== 0) return;
    if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    try {
      var top = window.top;
      var url = new URL(link.href, window.location.href);
      if (url.origin !== top.location.origin) return;
      var state = top.history.state || {};
      top.history.pushState(
        { usr: null, key: Math.random().toString(36).slice(2, 10), idx: (state.idx || 0) + 1 },
        "",
        url.pathname + url.search + url.hash
      );
      top.dispatchEvent(new PopStateEvent("popstate", { state: top.history.state }));
      event.preventDefault();
    } catch (error) {
      // another origin: leave it to the browser
    }
  });
})();
