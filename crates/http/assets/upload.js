// Tally merchant upload: sends the upload form with XMLHttpRequest to show a progress bar,
// then shows the main part of the page the node answered. The form works without this script.
(function () {
  "use strict";
  function bind() {
  var form = document.getElementById("upload-form");
  var bar = document.getElementById("upload-progress");
  var status = document.getElementById("upload-status");
  if (!form || !bar || !window.FormData) {
    return;
  }
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var xhr = new XMLHttpRequest();
    xhr.open("POST", form.getAttribute("action"));
    bar.hidden = false;
    bar.value = 0;
    xhr.upload.addEventListener("progress", function (e) {
      if (e.lengthComputable) {
        bar.max = e.total;
        bar.value = e.loaded;
        status.textContent = "Uploading: " + Math.round((e.loaded / e.total) * 100) + "%";
      }
    });
    xhr.addEventListener("load", function () {
      // The node's answer is a whole page: show its main part (the notice or the refusal,
      // and the files as they are now) in place of this one's.
      var answer = new DOMParser().parseFromString(xhr.responseText, "text/html");
      var main = answer.querySelector("main");
      if (main) {
        document.querySelector("main").replaceWith(main);
        bind(); // the new page's form gets its progress bar too
      } else {
        status.textContent = "The node answered " + xhr.status + ".";
      }
    });
    xhr.addEventListener("error", function () {
      status.textContent = "The upload broke off; send the file again.";
    });
    xhr.send(new FormData(form));
  });
  }
  bind();
})();
