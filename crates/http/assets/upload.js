// Tally merchant upload: sends the chosen file in parts of 1 MiB to the node's resumable upload
// (each part at the offset the node has, so a broken connection goes on where it stopped),
// with a progress bar; shows the product's page again once the node has sealed the file. Without this
// script (or without fetch) the form is posted as it is, in one go.
(function () {
  "use strict";
  var PART = 1024 * 1024;
  function bind() {
    var form = document.getElementById("upload-form");
    var bar = document.getElementById("upload-progress");
    var status = document.getElementById("upload-status");
    if (!form || !bar || !window.fetch || !form.getAttribute("data-parts")) {
      return;
    }
    form.addEventListener("submit", function (event) {
      var input = form.querySelector("input[type=file]");
      var file = input && input.files && input.files[0];
      if (!file) {
        return;
      }
      event.preventDefault();
      var kind = form.querySelector("[name=kind]").value;
      var url = form.getAttribute("data-parts") + "?name=" + encodeURIComponent(file.name) +
        "&kind=" + encodeURIComponent(kind) + "&total=" + file.size;
      var csrf = form.getAttribute("data-parts-csrf");
      var failures = 0;
      bar.hidden = false;
      bar.max = file.size;
      function show(n) {
        bar.value = n;
        status.textContent = "Uploading: " + Math.floor((n / file.size) * 100) + "%";
      }
      function retry() {
        failures += 1;
        if (failures > 30) {
          status.textContent = "The upload broke off; choose the same file again to go on where it stopped.";
          return;
        }
        status.textContent = "Connection lost; trying again…";
        window.setTimeout(resume, 2000);
      }
      function resume() {
        fetch(url, { credentials: "same-origin", cache: "no-store" })
          .then(function (r) { return r.ok ? r.json() : Promise.reject(r); })
          .then(function (s) { send(s.received); })
          .catch(retry);
      }
      function send(from) {
        show(from);
        var part = file.slice(from, Math.min(from + PART, file.size));
        fetch(url + "&offset=" + from, {
          method: "PUT",
          credentials: "same-origin",
          headers: { "X-CSRF-Token": csrf },
          body: part
        })
          .then(function (r) {
            return r.json().then(function (s) { return { ok: r.ok, s: s }; });
          })
          .then(function (a) {
            if (!a.ok) {
              var e = a.s && a.s.error;
              if (e && e.details && e.details.field === "offset") {
                resume(); // the node has another offset: go on from there
              } else {
                status.textContent = (e && e.message) || "The node refused the upload.";
              }
              return;
            }
            failures = 0;
            if (a.s.sealed) {
              status.textContent = "Sealed " + a.s.sealed + ".";
              window.location.assign(window.location.pathname + "?sealed=" +
                encodeURIComponent(a.s.sealed));
            } else {
              send(a.s.received);
            }
          })
          .catch(retry);
      }
      resume();
    });
  }
  bind();
})();
