"""A field's search without scripts, over HTTP: the bank branch of the deposit step found
by name, picked from radio buttons, with what was typed elsewhere kept (never personal
data), and nothing stepped."""

from __future__ import annotations

import re

from tests.flows.test_verification import (
    FLOW,
    a_branch,
    new_account_number,
    new_organisation,
    sign_in,
)
from tests.platform import Platform
from tests.web.client.test_pages import hidden, history, page, post, start
from web.client import search


async def _account_details(platform: Platform) -> tuple[str, str]:
    """An organisation at the deposit's account step; its instance and the page."""
    sign_in(platform, await new_organisation(platform))
    iid, _ = await start(platform, FLOW)
    await platform.ok(iid, "choose", {"method": "deposit"})
    status, html = await page(platform, f"/f/{iid}")
    assert status == 200
    assert 'formaction="/f/' + iid + '/search/branch_code"' in html
    return iid, html


def _form(html: str, **fields: str) -> dict[str, str]:
    return {"csrf": hidden(html, "csrf"), "version": hidden(html, "version"),
            "key": hidden(html, "key"), **fields}


async def test_a_branch_is_found_by_name_and_picked_without_scripts(
        platform: Platform) -> None:
    iid, html = await _account_details(platform)
    account = new_account_number()
    status, where, found = await post(platform, f"/f/{iid}/search/branch_code",
                                      _form(html, account_number=account,
                                            branch_code="工商 北京"))
    assert (status, where) == (200, "")  # the step again, not a step
    assert await history(platform, iid) == ["start", "choose"]
    options = re.findall(r'<input type="radio" id="field-branch_code[^"]*" name="branch_code"'
                         r' value="(\d{12})"', found)
    assert 1 <= len(options) <= search.SHOWN
    assert options[0] == (await a_branch(platform))["code"]  # as the search API ranks
    assert "中国工商银行" in found
    assert 'id="found-branch_code" role="status"' in found
    # Searched for again from the box under the matches, with the words typed.
    assert 'name="search-branch_code" value="工商 北京"' in found
    # The account number is personal data: not shown again, and the page says so.
    assert account not in found
    assert 'id="retype-account_number"' in found
    assert re.search(r'id="field-account_number"[^>]*aria-describedby="[^"]*'
                     r'retype-account_number', found)
    # The pick is the branch's code: the step takes it.
    status, where, _ = await post(platform, f"/f/{iid}/submit",
                                  _form(found, account_number=account,
                                        branch_code=options[0]))
    assert (status, where) == (303, f"/f/{iid}"), _
    # (the sandbox bank's credit may follow on its own)
    assert (await history(platform, iid))[:3] == ["start", "choose", "submit"]


async def test_a_search_keeps_what_was_typed_and_says_when_nothing_matches(
        platform: Platform) -> None:
    iid, html = await _account_details(platform)
    status, _, again = await post(platform, f"/f/{iid}/search/branch_code",
                                  _form(html, branch_code="没有这样的银行"))
    assert status == 200
    assert 'id="error-branch_code"' in again
    assert "没有找到匹配的结果" in again
    assert 'value="没有这样的银行"' in again  # what was typed, in its field
    assert 'type="radio"' not in again
    # Nothing typed: said under the field.
    status, _, empty = await post(platform, f"/f/{iid}/search/branch_code",
                                  _form(html, branch_code="  "))
    assert status == 422
    assert "请输入要搜索的文字" in empty
    # The box under the matches searches too, and a long text is refused.
    status, _, found = await post(platform, f"/f/{iid}/search/branch_code",
                                  _form(html, branch_code="", **{
                                      "search-branch_code": "建行 上海"}))
    assert status == 200
    assert "中国建设银行" in found
    status, _, long = await post(platform, f"/f/{iid}/search/branch_code",
                                 _form(html, **{"search-branch_code": "工" * 101}))
    assert status == 422
    assert "搜索内容过长" in long
    assert await history(platform, iid) == ["start", "choose"]


async def test_a_search_is_refused_unless_the_page_is_current_and_the_field_searches(
        platform: Platform) -> None:
    iid, html = await _account_details(platform)
    # No CSRF token: refused. An old page: out of date. No search on that field.
    status, _, _ = await post(platform, f"/f/{iid}/search/branch_code",
                              {"branch_code": "工商"})
    assert status == 403
    status, where, _ = await post(platform, f"/f/{iid}/search/branch_code",
                                  {**_form(html, branch_code="工商"), "version": "1"})
    assert (status, where) == (303, f"/f/{iid}?stale=1")
    status, _, _ = await post(platform, f"/f/{iid}/search/account_number",
                              _form(html, account_number="工商"))
    assert status == 404
    # Someone else's instance: nothing.
    async with platform.another_browser() as other:
        resp = await other.post(f"/f/{iid}/search/branch_code",
                                data=_form(html, branch_code="工商"))
        assert resp.status == 403
    assert await history(platform, iid) == ["start", "choose"]
